package spawner

import (
	"math/rand/v2"
	"time"
)

// stableRun is how long a run must have lasted for its end to be restarted
// without delay (PM2's min_uptime default).
const stableRun = time.Second

// tracker decides how long to wait before a restart and when a child is
// crash-looping. It holds no clock of its own so it can be tested with plain
// timestamps.
type tracker struct {
	initial, max time.Duration
	window       time.Duration
	maxRestarts  int
	// jitter returns the extra delay added to d; nil means none.
	jitter func(d time.Duration) time.Duration

	next     time.Duration
	restarts []time.Time // restarts still inside the window, oldest first
}

func newTracker(spec Spec) *tracker {
	return &tracker{
		initial:     spec.BackoffInitial,
		max:         spec.BackoffMax,
		window:      spec.RestartWindow,
		maxRestarts: spec.MaxRestarts,
		jitter:      smallJitter,
		next:        spec.BackoffInitial,
	}
}

// smallJitter adds up to 10% so that children failing together (a lost
// dependency) do not restart in lockstep.
func smallJitter(d time.Duration) time.Duration {
	if d < 10 {
		return 0
	}
	return rand.N(d / 10)
}

// restart records a restart wanted at now after a run that lasted uptime. It
// returns the delay to wait, or ok=false when this restart would exceed
// maxRestarts within the window.
func (t *tracker) restart(now time.Time, uptime time.Duration) (delay time.Duration, ok bool) {
	if uptime > t.window {
		// A child that stayed up a whole window is healthy again: a new crash
		// starts from a short delay.
		t.next = t.initial
		t.restarts = t.restarts[:0]
	}
	cut := 0
	for cut < len(t.restarts) && now.Sub(t.restarts[cut]) >= t.window {
		cut++
	}
	t.restarts = append(t.restarts[:0], t.restarts[cut:]...)
	if len(t.restarts) >= t.maxRestarts {
		return 0, false
	}
	t.restarts = append(t.restarts, now)
	if uptime >= stableRun {
		// A child that had been serving and then died (killed, crashed on
		// a request) comes back at once, as under PM2 or systemd's
		// RestartSec=0; the backoff is for children that die as they
		// start. The crash-loop limit still bounds how often.
		return 0, true
	}
	delay = t.next
	if t.jitter != nil {
		delay += t.jitter(delay)
	}
	t.next = min(t.next*2, t.max)
	return delay, true
}
