package spawner

import (
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	ms := time.Millisecond
	spec := Spec{BackoffInitial: 100 * ms, BackoffMax: 500 * ms, RestartWindow: 10 * time.Second, MaxRestarts: 4}
	type step struct {
		at     time.Duration // since t0
		uptime time.Duration
		delay  time.Duration
		ok     bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"doubling up to max then crash loop", []step{
			{0, 0, 100 * ms, true},
			{1 * time.Second, 0, 200 * ms, true},
			{2 * time.Second, 0, 400 * ms, true},
			{3 * time.Second, 0, 500 * ms, true},
			{4 * time.Second, 0, 0, false},
		}},
		{"old restarts leave the window", []step{
			{0, 0, 100 * ms, true},
			{1 * time.Second, 0, 200 * ms, true},
			{2 * time.Second, 0, 400 * ms, true},
			{3 * time.Second, 0, 500 * ms, true},
			{10 * time.Second, 0, 500 * ms, true}, // the one at 0 has expired
			{10500 * ms, 0, 0, false},
		}},
		{"long uptime resets backoff and history", []step{
			{0, 0, 100 * ms, true},
			{1 * time.Second, 0, 200 * ms, true},
			{2 * time.Second, 0, 400 * ms, true},
			{3 * time.Second, 0, 500 * ms, true},
			{15 * time.Second, 11 * time.Second, 0, true},
			{16 * time.Second, 0, 100 * ms, true},
		}},
		{"uptime equal to window does not reset", []step{
			{0, 0, 100 * ms, true},
			{20 * time.Second, 10 * time.Second, 0, true},
			{21 * time.Second, 0, 200 * ms, true},
		}},
		{"a stable run restarts at once, without growing the backoff", []step{
			{0, 0, 100 * ms, true},
			{2 * time.Second, stableRun, 0, true},
			{3 * time.Second, stableRun - ms, 200 * ms, true},
		}},
		{"stable runs still count toward the crash loop", []step{
			{0, 2 * time.Second, 0, true},
			{2 * time.Second, 2 * time.Second, 0, true},
			{4 * time.Second, 2 * time.Second, 0, true},
			{6 * time.Second, 2 * time.Second, 0, true},
			{8 * time.Second, 2 * time.Second, 0, false},
		}},
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker(spec)
			tr.jitter = nil
			for i, st := range tc.steps {
				d, ok := tr.restart(t0.Add(st.at), st.uptime)
				if d != st.delay || ok != st.ok {
					t.Fatalf("step %d: got (%v, %v), want (%v, %v)", i, d, ok, st.delay, st.ok)
				}
			}
		})
	}
}

func TestTrackerJitterBounded(t *testing.T) {
	spec := Spec{BackoffInitial: time.Second, BackoffMax: time.Second, RestartWindow: time.Hour, MaxRestarts: 1000}
	tr := newTracker(spec)
	now := time.Now()
	for i := range 200 {
		d, ok := tr.restart(now.Add(time.Duration(i)*time.Millisecond), 0)
		if !ok {
			t.Fatalf("restart %d refused", i)
		}
		if d < time.Second || d >= time.Second+100*time.Millisecond {
			t.Fatalf("restart %d: delay %v outside [1s, 1.1s)", i, d)
		}
	}
}
