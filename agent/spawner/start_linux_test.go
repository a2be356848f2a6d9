//go:build linux

package spawner

import (
	"context"
	"testing"

	"github.com/allex-go/allex/internal/procfs"
)

// TestRunningStartTicks restarts a child and checks every running event
// that gives a start time gives the one /proc has.
func TestRunningStartTicks(t *testing.T) {
	r := startSupervisor(t, context.Background(), helperSpec(t, "sleep"), Options{})
	given := 0
	for i := range 10 {
		ev := r.rec.waitFor(t, EventRunning)
		if ev.StartTicks != 0 {
			given++
			st, err := procfs.ReadStat(ev.PID)
			if err != nil {
				t.Fatal(err)
			}
			if st.StartTime != ev.StartTicks {
				t.Fatalf("run %d: start ticks %d, /proc says %d", i, ev.StartTicks, st.StartTime)
			}
		}
		if i < 9 {
			if err := r.s.Restart(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if given == 0 {
		t.Fatal("no running event gave a start time in 10")
	}
	if err := r.s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}
