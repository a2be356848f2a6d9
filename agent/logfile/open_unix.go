//go:build unix

package logfile

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// openAppend opens (creating it if needed) a log file for appending.
// os.OpenFile also tries to register every file with the netpoller, which
// a regular file refuses: five extra system calls per file.
func openAppend(name string) (*os.File, error) {
	fd, err := unix.Open(name, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_CLOEXEC, 0o640)
	for errors.Is(err, unix.EINTR) {
		fd, err = unix.Open(name, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_CLOEXEC, 0o640)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}
