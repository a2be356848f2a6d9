//go:build linux

package faults

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
)

// churnWorker owns its own need names, so its adds and removes of one
// name are never reordered by another worker.
type churnWorker struct {
	id      int
	rng     *rand.Rand
	alive   []string
	removed []string
	fresh   int
}

// next picks the next operation: add (a fresh name, or one removed
// earlier, to exercise remove-then-add-again) or remove, keeping between
// lo and hi needs of this worker alive.
func (w *churnWorker) next(lo, hi int) (add bool, name string) {
	add = len(w.alive) < lo || (len(w.alive) < hi && w.rng.Float64() < 0.55)
	if !add {
		i := w.rng.IntN(len(w.alive))
		name = w.alive[i]
		w.alive = append(w.alive[:i], w.alive[i+1:]...)
		w.removed = append(w.removed, name)
		return false, name
	}
	if len(w.removed) > 0 && w.rng.Float64() < 0.2 {
		i := w.rng.IntN(len(w.removed))
		name = w.removed[i]
		w.removed = append(w.removed[:i], w.removed[i+1:]...)
	} else {
		name = fmt.Sprintf("c%d-%04d", w.id, w.fresh)
		w.fresh++
	}
	w.alive = append(w.alive, name)
	return true, name
}

// TestChurnWithCrashingChildren: 1000 add/remove operations on needs, in
// a seeded random order from four concurrent clients (at most 100 needs
// alive at once), over two masters, while another goroutine SIGKILLs
// random published children and, halfway, one master is killed with
// SIGKILL and started again. Afterwards the registry must converge to
// exactly the needs that were added and not removed: one service each,
// its pid alive and its port accepting, one live child for it on exactly
// one master, and nothing for removed needs.
func TestChurnWithCrashingChildren(t *testing.T) {
	const (
		workers     = 4
		opsPer      = 250 // 1000 operations in all
		lo, hi      = 5, 25
		maxKills    = 120
		churnBudget = 150 * time.Second
	)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ALLEX_CHURN_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ALLEX_CHURN_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with ALLEX_CHURN_SEED=%d)", seed, seed)

	orphans := e2e.NewFaultOrphans(t)
	lan := e2e.StartFaultLAN(t, e2e.ShortDir(t), 0, token)
	m1 := e2e.StartFaultMaster(t, lan, "m1", 2*workers*hi, 0)
	m2 := e2e.StartFaultMaster(t, lan, "m2", 2*workers*hi, 0)

	start := time.Now()
	deadline := start.Add(churnBudget)
	var (
		wg      sync.WaitGroup
		ops     atomic.Int64
		errMu   sync.Mutex
		errs    []error
		kills   atomic.Int64
		stopped = make(chan struct{})
	)
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}
	ws := make([]*churnWorker, workers)
	for i := range ws {
		ws[i] = &churnWorker{id: i, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		wg.Add(1)
		go func(w *churnWorker) {
			defer wg.Done()
			for n := 0; n < opsPer; n++ {
				if time.Now().After(deadline) {
					fail(fmt.Errorf("worker %d: churn budget %s spent after %d operations", w.id, churnBudget, n))
					return
				}
				add, name := w.next(lo, hi)
				ctx, cancel := ctx30()
				var err error
				if add {
					err = lan.Admin.AddNeed(ctx, demoNeed(name))
				} else {
					err = lan.Admin.RemoveNeed(ctx, name)
				}
				cancel()
				if err != nil {
					fail(fmt.Errorf("worker %d op %d (add=%v %s): %w", w.id, n, add, name, err))
					return
				}
				ops.Add(1)
				time.Sleep(time.Duration(w.rng.IntN(30)) * time.Millisecond)
			}
		}(ws[i])
	}
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		rng := rand.New(rand.NewPCG(seed, 1000))
		for kills.Load() < maxKills {
			select {
			case <-stopped:
				return
			case <-time.After(time.Duration(100+rng.IntN(200)) * time.Millisecond):
			}
			svcs, err := services(lan)
			if err != nil || len(svcs) == 0 {
				continue
			}
			names := slices.Sorted(maps.Keys(svcs))
			pid := svcs[names[rng.IntN(len(names))]].PID
			// Only ever kill a demo child, never a recycled pid.
			if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err != nil || !strings.Contains(string(b), "demochild") {
				continue
			}
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				kills.Add(1)
			}
		}
	}()
	// Halfway through, crash a master and start it again on its dir: its
	// keeper kills its children and its needs go to the other master or
	// back.
	for ops.Load() < workers*opsPer/2 && time.Now().Before(deadline) {
		errMu.Lock()
		failed := len(errs) > 0
		errMu.Unlock()
		if failed {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if kids, err := liveNeedChildren(t, m2); err == nil {
		for _, pid := range kids {
			orphans.Add(pid)
		}
	}
	e2e.FaultKill9(t, m2.Proc)
	t.Logf("master m2 killed after %d operations", ops.Load())
	m2.Run(t)
	wg.Wait()
	close(stopped)
	<-killerDone
	churned := time.Since(start)
	errMu.Lock()
	for _, err := range errs {
		t.Error(err)
	}
	errMu.Unlock()
	if t.Failed() {
		t.FailNow()
	}
	want := map[string]bool{}
	for _, w := range ws {
		for _, n := range w.alive {
			want[n] = true
		}
	}
	t.Logf("%d operations and %d child kills in %s; %d needs should remain", ops.Load(), kills.Load(), churned.Round(time.Millisecond), len(want))

	settleStart := time.Now()
	var matched time.Duration
	var interim []string
	e2e.Eventually(t, 2*time.Minute, func() error {
		svcs, err := services(lan)
		if err != nil {
			return err
		}
		if s := diff(want, keys(svcs)); s != "" {
			return fmt.Errorf("services: %s", s)
		}
		if matched == 0 {
			matched = time.Since(settleStart)
		}
		orphans.Add(pidsOf(svcs)...)
		states, err := needStates(lan)
		if err != nil {
			return err
		}
		if s := diff(want, keys(states)); s != "" {
			return fmt.Errorf("needs: %s", s)
		}
		for inst, st := range states {
			if st != adminapi.StateSatisfied {
				return fmt.Errorf("need %s is %s", inst, st)
			}
		}
		if err := checkPlacement(t, svcs, m1, m2); err != nil {
			interim = append(interim, err.Error())
			return err
		}
		return checkServing(svcs)
	})
	if len(interim) > 0 {
		t.Logf("placement converged after: %s", clip(interim))
		// ALLEX_CHURN_TRACE=1 prints the daemons' log lines about the
		// first child that was out of place.
		var inst string
		if _, rest, ok := strings.Cut(interim[0], " runs "); ok {
			inst, _, _ = strings.Cut(rest, " ")
		}
		if os.Getenv("ALLEX_CHURN_TRACE") != "" && inst != "" {
			for _, p := range []*e2e.Proc{lan.Proc, m1.Proc, m2.Proc} {
				for _, l := range e2e.Lines(p.Output()) {
					if strings.Contains(l, inst+" ") || strings.Contains(l, "="+inst) || strings.Contains(l, inst+".") {
						t.Log(l)
					}
				}
			}
		}
	}
	t.Logf("registry listed exactly the needs %s after the churn stopped; every check passed after %s",
		matched.Round(time.Millisecond), time.Since(settleStart).Round(time.Millisecond))

	// A removed need must stay gone: nothing for it may come back.
	for _, w := range ws {
		for _, n := range w.removed {
			ctx, cancel := ctx30()
			_, err := lan.Admin.Service(ctx, n)
			cancel()
			if !errors.Is(err, adminclient.ErrNotFound) {
				t.Errorf("removed need %s: service lookup gave %v, want not found", n, err)
			}
		}
	}
}
