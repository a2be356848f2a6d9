//go:build unix

package cloexec

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Inherited marks every descriptor above stderr close-on-exec. The process
// keeps them open; what it starts gets only what it passes on purpose.
// Call it first thing, before the process opens or starts anything.
func Inherited() {
	if closeRange() == nil {
		return
	}
	// Before Linux 5.11, or off Linux.
	walk()
}

// walk marks every descriptor above stderr that /proc/self/fd (or /dev/fd)
// lists.
func walk() {
	dir := "/proc/self/fd"
	if _, err := os.Stat(dir); err != nil {
		dir = "/dev/fd"
	}
	for _, fd := range List(dir) {
		if fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

// List returns the descriptors open in dir (/proc/<pid>/fd), nil if it
// cannot be read. The directory's own descriptor, open while it is read,
// may be among them.
func List(dir string) []int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var fds []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, n)
		}
	}
	return fds
}
