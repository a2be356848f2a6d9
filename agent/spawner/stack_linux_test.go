//go:build !race

package spawner

import (
	"context"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// A supervisor waiting for its child keeps frames small enough for the
// runtime to halve its stack, grown while it started the child, to 4 KiB
// (see runOnce). Hundreds of them are most of the master's stacks. The
// race detector doubles the runtime's stack reserve, hence the build tag.
func TestWaitingSupervisorsStacksShrink(t *testing.T) {
	sleepPath, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	w, err := NewExitWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const n = 100
	ready := make(chan struct{}, n)
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	sups := make([]*Supervisor, n)
	done := make(chan struct{}, n)
	for i := range sups {
		s, err := New(Spec{Module: "m", Instance: "i" + strconv.Itoa(i), Command: sleepPath, Args: []string{"1000"},
			Restart: PolicyNever, Readiness: ReadyNone, StartTimeout: time.Minute, LogDir: t.TempDir()},
			Options{Exits: w, OnEvent: func(ev Event) {
				if ev.Kind == EventReady {
					ready <- struct{}{}
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		sups[i] = s
		go callerFrame(s, done)
	}
	defer func() {
		for _, s := range sups {
			_ = s.Stop(context.Background())
		}
		for range sups {
			<-done
		}
	}()
	for range sups {
		<-ready
	}
	// A GC halves a stack at most once, and only one parked by then: a
	// supervisor may still be on its way back from the ready event.
	var per int64
	for range 20 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		if per = (int64(m.StackInuse) - int64(base.StackInuse)) / n; per < 6<<10 {
			return
		}
	}
	t.Errorf("%d bytes of stack per waiting supervisor, want about 4 KiB", per)
}

// callerFrame runs s as the agent does, from a function with a frame of
// its own.
//
//go:noinline
func callerFrame(s *Supervisor, done chan<- struct{}) {
	var pad [12]int
	for i := range pad {
		pad[i] = i
	}
	_ = s.Run(context.Background())
	done <- struct{}{}
	runtime.KeepAlive(pad)
}
