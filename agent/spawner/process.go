package spawner

import "fmt"

// ended is how a run's process ended.
type ended struct {
	code   int    // exit code; -1 when killed by a signal or not known
	signal string // the signal that killed it, if any
	err    error  // the wait failed: code and signal are not known
	// strays: it exited 0 and processes it started lived on (see
	// Launcher); found by the supervisor when it forks the child itself.
	strays bool
}

// clean reports an exit with code 0.
func (e ended) clean() bool { return e.err == nil && e.signal == "" && e.code == 0 }

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
