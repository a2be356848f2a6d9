//go:build windows

package spawner

import (
	"os"
	"syscall"
)

// Windows has no process groups to signal; the fallback only reaches the
// main process.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func terminate(p process) error { return p.os.Kill() }

func killGroup(p process) error {
	err := p.os.Kill()
	if err == os.ErrProcessDone {
		return nil
	}
	return err
}

func exitInfo(ps *os.ProcessState) (int, string) { return ps.ExitCode(), "" }

// openLog opens (creating it if needed) a child's log file for appending.
func openLog(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}
