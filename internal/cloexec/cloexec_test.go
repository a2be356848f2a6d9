//go:build unix

package cloexec

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// inheritable opens a descriptor without close-on-exec, as a parent shell
// leaves one.
func inheritable(t *testing.T) int {
	t.Helper()
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if closeOnExec(t, fd) {
		t.Fatalf("fd %d opened close-on-exec", fd)
	}
	return fd
}

func closeOnExec(t *testing.T, fd int) bool {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("fd %d: %v", fd, err)
	}
	return flags&unix.FD_CLOEXEC != 0
}

func TestInherited(t *testing.T) {
	fd := inheritable(t)
	Inherited()
	if !closeOnExec(t, fd) {
		t.Errorf("fd %d not close-on-exec after Inherited", fd)
	}
	for fd := range 3 {
		if closeOnExec(t, fd) {
			t.Errorf("stdio fd %d made close-on-exec", fd)
		}
	}
}

// TestWalk covers kernels without close_range.
func TestWalk(t *testing.T) {
	fd := inheritable(t)
	if !slices.Contains(List("/proc/self/fd"), fd) && !slices.Contains(List("/dev/fd"), fd) {
		t.Fatalf("fd %d not listed", fd)
	}
	walk()
	if !closeOnExec(t, fd) {
		t.Errorf("fd %d not close-on-exec after walk", fd)
	}
}

func TestListMissingDir(t *testing.T) {
	if fds := List("/nonexistent/fd"); fds != nil {
		t.Errorf("List of a missing dir: %v", fds)
	}
}
