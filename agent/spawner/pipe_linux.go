//go:build linux

package spawner

import (
	"os"

	"golang.org/x/sys/unix"
)

// pipeSize is what a pipe grows to once its child fills it: the largest
// size an unprivileged process may set by default
// (/proc/sys/fs/pipe-max-size). Grown only then, since a user's pipes
// share a budget (/proc/sys/fs/pipe-user-pages-soft) past which new
// pipes get two pages.
const pipeSize = 1 << 20

// newPipe returns a pipe whose write end, for the child, blocks as a
// file or terminal would. Its read end is left out of the runtime poller,
// since the log poller waits on it (and makes it nonblocking then).
func newPipe() (r, w *os.File, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	return os.NewFile(uintptr(fds[0]), "|0"), os.NewFile(uintptr(fds[1]), "|1"), nil
}

// growPipe raises the pipe's capacity to pipeSize; when the kernel
// refuses, the pipe keeps its size.
func growPipe(fd int) {
	_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, pipeSize)
}
