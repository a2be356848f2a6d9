//go:build linux

package spawner

import (
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit returns once process pid has exited (it is not reaped). A
// goroutine blocked in exec.Cmd.Wait pins an OS thread for the child's
// whole life; waiting on a pidfd through the runtime poller does not, so
// a master with hundreds of children keeps a handful of threads. Any
// failure returns at once and the caller's blocking Wait does the job.
func awaitExit(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
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
