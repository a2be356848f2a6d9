package agent

import (
	"context"
	"runtime/debug"
	"time"
)

// A burst of child starts (a master taking hundreds of needs at once)
// leaves the Go heap at its peak size: garbage from the start-up work and
// free pages the runtime keeps for a next burst that may never come, which
// for 500 children was several MB of the master's RSS. Once starts have
// stopped for trimQuiet, and at least trimMinStarts happened, the heap is
// collected and its free pages returned to the OS.
const (
	trimQuiet     = 2 * time.Second
	trimMinStarts = 50
)

// trimAfterBursts calls trim once starts (one signal each) have been quiet
// for quiet after at least minStarts of them, and runs until ctx is done.
func trimAfterBursts(ctx context.Context, starts <-chan struct{}, quiet time.Duration, minStarts int, trim func(starts int)) {
	timer := time.NewTimer(quiet)
	timer.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-starts:
			n++
			timer.Reset(quiet)
		case <-timer.C:
			if n >= minStarts {
				trim(n)
			}
			n = 0
		}
	}
}

func (a *Agent) freeMemory(starts int) {
	t0 := time.Now()
	debug.FreeOSMemory()
	a.log.Debug("returned memory after a burst of starts", "starts", starts, "took", time.Since(t0))
}

// noteStart tells trimAfterBursts about a child start without ever
// blocking the supervisor reporting it.
func (a *Agent) noteStart() {
	select {
	case a.startSignals <- struct{}{}:
	default:
	}
}
