//go:build linux

package faults

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
)

// TestLANManagerRestartUnderLoad: 100 needs run on two masters; the LAN
// manager is stopped (SIGTERM, or SIGKILL: bbolt must survive it) while 50 more needs are being added, and
// started again on the same bolt data dir. Every need ends up satisfied
// exactly once, the children that ran before the restart keep running
// (same pids, re-adopted through the masters' hellos), and no need runs
// on both masters.
func TestLANManagerRestartUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill bool
	}{
		{"SIGTERM", false},
		{"SIGKILL", true},
	} {
		t.Run(tc.name, func(t *testing.T) { testLANManagerRestart(t, tc.kill) })
	}
}

func testLANManagerRestart(t *testing.T, kill bool) {
	const first, more = 100, 50
	orphans := e2e.NewFaultOrphans(t)
	data := e2e.ShortDir(t)
	// A long grace: the masters must get back within it however slowly
	// the restarted LAN manager comes up on a loaded machine.
	lanArgs := []string{"-store", "bolt", "-lease", "20s", "-fence-grace", "2s"}
	lan := e2e.StartFaultLAN(t, data, 0, token, lanArgs...)
	m1 := e2e.StartFaultMaster(t, lan, "m1", first+more+10, 0)
	m2 := e2e.StartFaultMaster(t, lan, "m2", first+more+10, 0)

	var names []string
	for i := 0; i < first; i++ {
		names = append(names, fmt.Sprintf("r-%03d", i))
	}
	addConcurrently(t, lan, names, 4)
	before := waitServices(t, lan, setOf(names...), 3*time.Minute)
	orphans.Add(pidsOf(before)...)

	// Add the next 50 in a bounded loop, retrying across the restart.
	var cur atomic.Pointer[e2e.FaultLAN]
	var refused atomic.Int64
	cur.Store(lan)
	var wg sync.WaitGroup
	added := make(chan string, more)
	addErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(added)
		deadline := time.Now().Add(2 * time.Minute)
		for i := first; i < first+more; i++ {
			name := fmt.Sprintf("r-%03d", i)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := addOrExists(ctx, cur.Load().Admin, demoNeed(name))
				cancel()
				if err == nil {
					break
				}
				refused.Add(1)
				if time.Now().After(deadline) {
					addErr <- fmt.Errorf("add %s: %w", name, err)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			added <- name
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// Stop the LAN manager once the adds are under way.
	for i := 0; i < 10; i++ {
		names = append(names, <-added)
	}
	if kill {
		e2e.FaultKill9(t, lan.Proc)
	} else if err := lan.Stop(30 * time.Second); err != nil {
		t.Logf("LAN manager stopped: %v", err)
	}
	down := time.Now()
	// Stay down a while: adds keep failing and the masters' reconnects
	// back off, as in a real outage.
	time.Sleep(time.Second)
	restarted := e2e.StartFaultLAN(t, data, lan.Port, token, lanArgs...)
	t.Logf("LAN manager answering again %s after the stop", time.Since(down).Round(time.Millisecond))
	cur.Store(restarted)
	lan = restarted
	for n := range added {
		names = append(names, n)
	}
	wg.Wait()
	select {
	case err := <-addErr:
		t.Fatal(err)
	default:
	}
	if len(names) != first+more {
		t.Fatalf("added %d needs, want %d", len(names), first+more)
	}

	var final map[string]lanwire.ServiceRecord
	e2e.Eventually(t, 3*time.Minute, func() error {
		svcs, err := services(lan)
		if err != nil {
			return err
		}
		if s := diff(setOf(names...), keys(svcs)); s != "" {
			return fmt.Errorf("services: %s", s)
		}
		orphans.Add(pidsOf(svcs)...)
		for inst, old := range before {
			if s := svcs[inst]; s.PID != old.PID || s.MachineID != old.MachineID {
				return fmt.Errorf("service %s was %s pid %d before the restart, now %s pid %d", inst, old.MachineID, old.PID, s.MachineID, s.PID)
			}
		}
		if err := checkPlacement(t, svcs, m1, m2); err != nil {
			return err
		}
		final = svcs
		return checkServing(svcs)
	})
	states, err := needStates(lan)
	if err != nil {
		t.Fatal(err)
	}
	if s := diff(setOf(names...), keys(states)); s != "" {
		t.Errorf("needs: %s", s)
	}
	for inst, st := range states {
		if st != adminapi.StateSatisfied {
			t.Errorf("need %s is %s, want satisfied", inst, st)
		}
	}
	t.Logf("%d services after the restart (m1/m2 split %d/%d); %d add attempts failed during the outage and were retried",
		len(final), countOn(final, "m1"), countOn(final, "m2"), refused.Load())
}

func countOn(svcs map[string]lanwire.ServiceRecord, id string) int {
	n := 0
	for _, s := range svcs {
		if s.MachineID == id {
			n++
		}
	}
	return n
}

// addConcurrently adds the needs with a few workers.
func addConcurrently(t *testing.T, lan *e2e.FaultLAN, names []string, workers int) {
	t.Helper()
	ch := make(chan string)
	errs := make(chan error, len(names))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range ch {
				ctx, cancel := ctx30()
				if err := lan.Admin.AddNeed(ctx, demoNeed(n)); err != nil {
					errs <- fmt.Errorf("add %s: %w", n, err)
				}
				cancel()
			}
		}()
	}
	for _, n := range names {
		ch <- n
	}
	close(ch)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestLANManagerStopsAnswering: the LAN manager is frozen with SIGSTOP
// for well over three heartbeats. The master notices the dead link, keeps
// its children (same pids), and once the LAN manager is continued it
// reconnects; the services stay published with the same pids and never
// went down (the stop is shorter than the grace).
func TestLANManagerStopsAnswering(t *testing.T) {
	orphans := e2e.NewFaultOrphans(t)
	lan := e2e.StartFaultLAN(t, e2e.ShortDir(t), 0, token, "-lease", "30s", "-fence-grace", "2s")
	pid := lan.Cmd.Process.Pid
	// Registered after the LAN manager's own cleanup, so it runs first.
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	m1 := e2e.StartFaultMaster(t, lan, "m1", 10, 0)
	names := addNeeds(t, lan, "s", 0, 5)
	before := waitServices(t, lan, setOf(names...), 90*time.Second)
	orphans.Add(pidsOf(before)...)
	downs := watchDowns(t, lan)
	kids, err := liveNeedChildren(t, m1)
	if err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	e2e.Eventually(t, 20*time.Second, func() error {
		st, err := e2e.FaultLinkState(t, m1.Socket)
		if err != nil {
			return err
		}
		if st == "connected" {
			return fmt.Errorf("master link still %s", st)
		}
		return nil
	})
	t.Logf("master saw the link die %s after SIGSTOP", time.Since(stopped).Round(time.Millisecond))
	// Stay stopped a while longer (heartbeat 200ms: ~10 heartbeats), so
	// reconnect attempts against the frozen LAN manager fail too.
	time.Sleep(2 * time.Second)
	st, err := e2e.FaultLinkState(t, m1.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if st == "connected" {
		t.Fatalf("master reports %s to a stopped LAN manager", st)
	}
	now, err := liveNeedChildren(t, m1)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(now) != fmt.Sprint(kids) {
		t.Fatalf("children changed while the LAN manager was unreachable: before %v, now %v", kids, now)
	}

	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 60*time.Second, func() error { return linkConnected(t, m1.Socket) })
	e2e.Eventually(t, 30*time.Second, func() error {
		svcs, err := services(lan)
		if err != nil {
			return err
		}
		if s := diff(setOf(names...), keys(svcs)); s != "" {
			return fmt.Errorf("services: %s", s)
		}
		for inst, old := range before {
			if svcs[inst].PID != old.PID {
				return fmt.Errorf("service %s: pid %d, was %d", inst, svcs[inst].PID, old.PID)
			}
		}
		if err := checkPlacement(t, svcs, m1); err != nil {
			return err
		}
		ctx, cancel := ctx30()
		defer cancel()
		ms, err := lan.Admin.Machines(ctx)
		if err != nil {
			return err
		}
		if len(ms) != 1 || !ms[0].Connected {
			return fmt.Errorf("machines: %+v", ms)
		}
		return checkServing(svcs)
	})
	if d := downs(); len(d) > 0 {
		t.Errorf("services went down while the LAN manager was frozen: %v", d)
	}
}
