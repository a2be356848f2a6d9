package spawner

import (
	"fmt"
	"os"
	"os/exec"
)

// process is one started run of the child.
type process struct {
	pid int
	// os is the handle to end the process with where there are no
	// process groups to signal (Windows); nil where it has been released.
	os *os.Process
}

// ended is how a run's process ended.
type ended struct {
	code   int    // exit code; -1 when killed by a signal or not known
	signal string // the signal that killed it, if any
	err    error  // the wait failed: code and signal are not known
}

// how describes the end for events and logs.
func (e ended) how() string {
	switch {
	case e.err != nil:
		return fmt.Sprintf("wait failed: %v", e.err)
	case e.signal != "":
		return "killed by " + e.signal
	}
	return fmt.Sprintf("exited with code %d", e.code)
}

// waitCmd waits for cmd through os/exec, where the process has not been
// released.
func waitCmd(cmd *exec.Cmd) ended {
	err := cmd.Wait()
	if cmd.ProcessState == nil {
		return ended{code: -1, err: err}
	}
	code, sig := exitInfo(cmd.ProcessState)
	return ended{code: code, signal: sig}
}
