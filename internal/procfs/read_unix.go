//go:build unix

package procfs

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// statBufSize holds any /proc/<pid>/stat line: 52 numeric fields and a
// command name of at most 64 bytes.
const statBufSize = 2048

// readSmall reads the file at path, which must fit in buf, with one open
// and as few reads as it takes. The master reads a child's stat line at
// every start; os.ReadFile also stats the file and tries to register it
// with the netpoller, twice the system calls.
func readSmall(path string, buf []byte) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	for errors.Is(err, syscall.EINTR) {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	n := 0
	for {
		m, err := syscall.Read(fd, buf[n:])
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		case m == 0:
			return buf[:n], nil
		}
		if n += m; n == len(buf) {
			return nil, fmt.Errorf("procfs: %s: longer than %d bytes", path, len(buf))
		}
	}
}
