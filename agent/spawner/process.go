package spawner

import "fmt"

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
