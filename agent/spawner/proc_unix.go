//go:build unix

package spawner

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr puts the child in a process group of its own so the whole
// tree it spawns can be signalled at once.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// terminate asks the child's whole group to stop.
func terminate(p process) error {
	return signalGroup(p.pid, unix.SIGTERM)
}

// killGroup kills every member of the child's group. The group id is the
// leader's pid; the kernel does not reuse a pid while a group with that id
// still exists, so this is safe even after the leader has been reaped.
func killGroup(p process) error {
	return signalGroup(p.pid, unix.SIGKILL)
}

func signalGroup(pgid int, sig unix.Signal) error {
	err := unix.Kill(-pgid, sig)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}
