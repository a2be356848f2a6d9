//go:build unix && !linux

package spawner

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// exitInfo returns the exit code (-1 when killed by a signal) and the name
// of the signal, if any.
func exitInfo(ps *os.ProcessState) (int, string) {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1, unix.SignalName(ws.Signal())
	}
	return ps.ExitCode(), ""
}
