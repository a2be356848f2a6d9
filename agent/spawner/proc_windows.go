//go:build windows

package spawner

import (
	"os"
	"syscall"
)

// Windows has no process groups to signal; the fallback only reaches the
// main process.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func terminate(p process) error { return kill(p) }

func killGroup(p process) error {
	err := kill(p)
	if err == os.ErrProcessDone {
		return nil
	}
	return err
}

// kill ends p by its handle; a launched process may have none (see launched).
func kill(p process) error {
	if p.os == nil {
		return os.ErrProcessDone
	}
	return p.os.Kill()
}

func exitInfo(ps *os.ProcessState) (int, string) { return ps.ExitCode(), "" }
