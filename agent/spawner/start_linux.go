//go:build linux

package spawner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// start starts cmd and sends how its process ended to done, once.
//
// The pidfd clone returns is the only descriptor the master keeps for the
// child: the exit watcher waits on it, and the duplicate os.Process would
// keep as its handle is released. The kernel copies every descriptor of
// the master into each child it forks and closes them again at exec, so
// each one held per child made every start slower as children grew: with
// two per child, 1000 descriptors at 500 children added 0.14 ms to a
// start (measured with os/exec), a tenth of a kill -9 → restart.
func start(cmd *exec.Cmd, w *ExitWatcher, done chan<- ended) (process, error) {
	pidfd := -1
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.PidFD = &pidfd
	if err := cmd.Start(); err != nil {
		return process{}, err
	}
	pid := cmd.Process.Pid
	if pidfd < 0 {
		// No pidfd from clone (Linux before 5.2, or a sandbox without
		// clone3): os/exec waits, on a thread of its own.
		go func() { done <- waitCmd(cmd) }()
		return process{pid: pid, os: cmd.Process}, nil
	}
	_ = cmd.Process.Release()
	reap := func() { done <- wait4(pid) }
	err := errors.New("no exit watcher")
	if w != nil {
		// An exit the watcher saw is reaped on its goroutine: the wait
		// does not block then, and a goroutine of its own took 35 µs
		// to start running (traced), on the way from a child's death to
		// its restart.
		err = w.watch(pidfd, func(gone bool) {
			if gone {
				reap()
			} else {
				go reap()
			}
		})
	}
	if err != nil {
		go func() {
			awaitPidfd(pidfd)
			reap()
		}()
	}
	return process{pid: pid}, nil
}

// wait4 reaps pid, which start has released from os/exec.
func wait4(pid int) ended {
	var ws unix.WaitStatus
	_, err := unix.Wait4(pid, &ws, 0, nil)
	for errors.Is(err, unix.EINTR) {
		_, err = unix.Wait4(pid, &ws, 0, nil)
	}
	switch {
	case err != nil:
		return ended{code: -1, err: fmt.Errorf("wait4 %d: %w", pid, err)}
	case ws.Signaled():
		return ended{code: -1, signal: unix.SignalName(ws.Signal())}
	}
	return ended{code: ws.ExitStatus()}
}

// awaitPidfd returns once the process behind pidfd has exited (it is not
// reaped), and closes pidfd. It waits through the runtime poller, so the
// wait pins no OS thread. Any failure returns at once and wait4 blocks
// instead.
func awaitPidfd(pidfd int) {
	if err := unix.SetNonblock(pidfd, true); err != nil {
		_ = unix.Close(pidfd)
		return
	}
	// Non-blocking, so os.NewFile registers it with the netpoller.
	f := os.NewFile(uintptr(pidfd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		// A pidfd polls readable once the process has exited.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return err != nil || n > 0
	})
}
