//go:build unix

package spawner

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// benchSpawn measures, per iteration, the time from Run starting to the
// first event of kind k, then stops the child.
func benchSpawn(b *testing.B, spec Spec, k EventKind) {
	var total time.Duration
	n := 0
	for b.Loop() {
		got := make(chan time.Time, 1)
		s, err := New(spec, Options{OnEvent: func(ev Event) {
			if ev.Kind == k {
				select {
				case got <- time.Now():
				default:
				}
			}
		}})
		if err != nil {
			b.Fatal(err)
		}
		errc := make(chan error, 1)
		t0 := time.Now()
		go func() { errc <- s.Run(context.Background()) }()
		select {
		case at := <-got:
			total += at.Sub(t0)
			n++
		case err := <-errc:
			b.Fatalf("Run ended before %v: %v", k, err)
		case <-time.After(waitLimit):
			b.Fatalf("no %v within %v", k, waitLimit)
		}
		if err := s.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	if n > 0 {
		b.ReportMetric(float64(total.Microseconds())/float64(n), "µs-to-"+k.String())
	}
}

func BenchmarkSpawnToRunning(b *testing.B) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip("no true(1)")
	}
	spec := Spec{Module: "bench", Instance: "b1", Command: truePath, Restart: PolicyNever}
	benchSpawn(b, spec, EventRunning)
}

func BenchmarkSpawnToReadyPorts(b *testing.B) {
	spec := helperSpec(b, "listen")
	spec.Ports = map[string]uint16{"tcp": freePort(b)}
	spec.Readiness = ReadyPorts
	benchSpawn(b, spec, EventReady)
}
