//go:build unix

package spawner

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/agent/keeper"
)

// benchSpawn measures, per iteration, the time from Run starting to the
// first event of kind k, then stops the child.
func benchSpawn(b *testing.B, spec Spec, k EventKind, opts Options) {
	var total time.Duration
	n := 0
	for b.Loop() {
		got := make(chan time.Time, 1)
		opts.OnEvent = func(ev Event) {
			if ev.Kind == k {
				select {
				case got <- time.Now():
				default:
				}
			}
		}
		s, err := New(spec, opts)
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
	benchSpawn(b, spec, EventRunning, Options{})
}

// BenchmarkSpawnToRunningKeeper is BenchmarkSpawnToRunning with the
// keeper forking the child: one round trip over its socket more.
func BenchmarkSpawnToRunningKeeper(b *testing.B) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip("no true(1)")
	}
	spec := Spec{Module: "bench", Instance: "b1", Command: truePath, Restart: PolicyNever}
	benchSpawn(b, spec, EventRunning, Options{Launcher: startKeeper(b)})
}

func BenchmarkSpawnToReadyPorts(b *testing.B) {
	spec := helperSpec(b, "listen")
	spec.Ports = map[string]uint16{"tcp": freePort(b)}
	spec.Readiness = ReadyPorts
	benchSpawn(b, spec, EventReady, Options{})
}

// BenchmarkKillToRestarted measures a crash restart: SIGKILL of a child
// that had been running a while to the running event of its replacement
// (exec included), which is the supervisor's share of kill recovery.
func BenchmarkKillToRestarted(b *testing.B) { benchKill(b, Options{}) }

// BenchmarkKillToRestartedKeeper is BenchmarkKillToRestarted with the
// keeper reaping the child and forking its replacement.
func BenchmarkKillToRestartedKeeper(b *testing.B) { benchKill(b, Options{Launcher: startKeeper(b)}) }

func benchKill(b *testing.B, opts Options) {
	sleepPath, err := exec.LookPath("sleep")
	if err != nil {
		b.Skip("no sleep(1)")
	}
	spec := Spec{Module: "bench", Instance: "b1", Command: sleepPath, Args: []string{"1000"}, Restart: PolicyAlways,
		MaxRestarts: 1 << 30, RestartWindow: time.Millisecond}
	running := make(chan Event, 1)
	opts.OnEvent = func(ev Event) {
		if ev.Kind == EventRunning {
			running <- ev
		}
	}
	s, err := New(spec, opts)
	if err != nil {
		b.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	ev := <-running
	var total time.Duration
	n := 0
	for b.Loop() {
		// Past stableRun, as a serving child would be.
		b.StopTimer()
		time.Sleep(stableRun + 10*time.Millisecond)
		b.StartTimer()
		t0 := time.Now()
		if err := syscall.Kill(ev.PID, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		select {
		case ev = <-running:
			total += ev.Time.Sub(t0)
			n++
		case <-time.After(waitLimit):
			b.Fatalf("no restart within %v", waitLimit)
		}
	}
	if err := s.Stop(context.Background()); err != nil {
		b.Fatal(err)
	}
	<-errc
	if n > 0 {
		b.ReportMetric(float64(total.Microseconds())/float64(n), "µs-kill-to-running")
	}
}

// startKeeper starts a keeper (this test binary, see keeper_linux_test.go)
// for the children of a test or benchmark, closed at its end.
func startKeeper(t testing.TB) *keeper.Client {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := keeper.Start(ctx, keeper.Options{
		StateDir: t.TempDir(),
		// Without the race runtime's second of sleep at every exit.
		Command: []string{"/usr/bin/env", "GORACE=atexit_sleep_ms=0", exe, "keeper"},
	})
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("keeper: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("keeper close: %v", err)
		}
	})
	return c
}
