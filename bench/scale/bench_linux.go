package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanwire"
)

// fdReserve is what a worker keeps of its descriptor limit beyond its
// masters' links and listeners (the runtime, epoll, stdio).
const fdReserve = 256

// bench is one run: the processes and what it measured so far.
type bench struct {
	o       options
	lm      *lanManager
	workers []*worker
	tr      *tracker
	client  *adminclient.Client
	res     *result
	// stopWatch ends the tracker's watch before the LAN manager stops.
	stopWatch context.CancelFunc
}

// runBench runs the whole bench once. The result is returned, partial,
// also with an error, when it got as far as adding needs.
func runBench(ctx context.Context, o options) (*result, error) {
	b := &bench{o: o, tr: newTracker(), res: &result{opts: o, started: time.Now(), loadBefore: loadAvg()}}
	dir, err := os.MkdirTemp("", "allex-scale-")
	if err != nil {
		return nil, err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "scale: work dir", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if err := b.start(ctx, dir); err != nil {
		b.stop()
		return nil, err
	}
	err = b.measure(ctx)
	b.stop()
	b.res.loadAfter = loadAvg()
	return b.res, err
}

// layout splits the masters over worker processes that each stay under
// the descriptor limit, and picks the CPUs: the LAN manager gets the last
// one, the workers the others.
func (b *bench) layout() (perWorker int, lmCPUs, simCPUs []int, err error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, nil, nil, fmt.Errorf("descriptor limit: %w", err)
	}
	// A master needs its link and a listener per copy.
	perWorker = int((lim.Max - fdReserve) / uint64(b.o.maxProcs+1))
	if lim.Max <= fdReserve || perWorker < 1 {
		return 0, nil, nil, fmt.Errorf("-max-processes %d: a master's listeners do not fit the descriptor hard limit %d", b.o.maxProcs, lim.Max)
	}
	b.res.fdLimit = lim.Max
	cpus, err := allowedCPUs()
	if err != nil {
		return 0, nil, nil, err
	}
	lmCPUs, simCPUs = cpus[len(cpus)-1:], cpus[:len(cpus)-1]
	if len(simCPUs) == 0 {
		simCPUs = lmCPUs
		b.res.notes = append(b.res.notes, "one CPU only: the masters share the LAN manager's")
	}
	b.res.lmCPUs, b.res.simCPUs = lmCPUs, simCPUs
	// The bench's own work (the watch stream, the requests) stays off
	// the LAN manager's CPU too.
	if err := pinSelf(simCPUs); err != nil {
		return 0, nil, nil, err
	}
	return perWorker, lmCPUs, simCPUs, nil
}

// start builds and starts the LAN manager, the watch and the workers,
// and waits until every master is connected.
func (b *bench) start(ctx context.Context, dir string) error {
	perWorker, lmCPUs, simCPUs, err := b.layout()
	if err != nil {
		return err
	}
	bin := b.o.lanmanager
	if bin == "" {
		bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		bin, err = buildLanManager(bctx, dir)
		cancel()
		if err != nil {
			return err
		}
	}
	b.res.commit = gitDescribe()
	if b.lm, err = startLanManager(bin, dir, lmCPUs, b.o.nice, b.o.lmFlags, b.o.insecure, 30*time.Second); err != nil {
		return err
	}
	b.client = b.lm.adminClient()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	token, err := b.lm.masterToken(tctx)
	cancel()
	if err != nil {
		return err
	}
	started := make(chan struct{})
	wctx, cancel := context.WithCancel(ctx)
	b.stopWatch = cancel
	go b.tr.run(wctx, &http.Client{Transport: b.lm.transport()}, b.lm.url, b.lm.token, started)
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		return errors.New("the watch stream did not open within 30s")
	}
	n := (b.o.masters + perWorker - 1) / perWorker
	per := (b.o.masters + n - 1) / n
	for first := 0; first < b.o.masters; first += per {
		w, err := startWorker(simCPUs, b.lm, token, first, min(per, b.o.masters-first), b.o.maxProcs, b.o.timeout)
		if err != nil {
			return err
		}
		b.workers = append(b.workers, w)
	}
	return b.waitConnected(ctx)
}

func (b *bench) waitConnected(ctx context.Context) error {
	deadline := time.After(b.o.timeout)
	for _, w := range b.workers {
		select {
		case <-w.ready:
		case <-w.done:
			return fmt.Errorf("worker of masters %d-%d exited before its masters were connected", w.first, w.first+w.count-1)
		case <-deadline:
			return fmt.Errorf("masters not connected within %v", b.o.timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ms, err := b.client.Machines(cctx)
	if err != nil {
		return err
	}
	if len(ms) != b.o.masters {
		return fmt.Errorf("the LAN manager lists %d machines, want %d", len(ms), b.o.masters)
	}
	b.res.workers = len(b.workers)
	return nil
}

// stop ends the workers, then the LAN manager.
func (b *bench) stop() {
	for _, w := range b.workers {
		w.stop(10 * time.Second)
		b.res.stats = append(b.res.stats, w.stats)
		for len(w.lost) > 0 {
			b.res.lost = append(b.res.lost, <-w.lost)
		}
	}
	b.workers = nil
	if b.stopWatch != nil {
		b.stopWatch()
	}
	if b.lm != nil {
		b.lm.stop()
		b.lm = nil
	}
}

func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func need(instance string) lanwire.Need {
	return lanwire.Need{Instance: instance, Module: module, Protocols: []string{"tcp"}}
}

// measure adds the needs, times them, and kills a master if asked.
func (b *bench) measure(ctx context.Context) error {
	r := b.res
	pids := b.pids()
	lmCPU0, simCPU0, steal0, wait0 := b.cpu(pids)
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go b.sampleFDs(sctx)

	t0 := time.Now()
	deadline := t0.Add(b.o.timeout)
	singles := newSingles(b.client, b.o.singleRate, b.o.singles())
	reqCtx, cancelReqs := context.WithDeadline(ctx, deadline)
	defer cancelReqs()
	singlesCtx, stopSingles := context.WithCancel(reqCtx)
	go singles.run(singlesCtx, reqCtx)
	added, addErr := b.addBurst(ctx, deadline)
	r.addTook = time.Since(t0)
	complete := addErr == nil && b.tr.waitFor(ctx, deadline, func() bool { return b.tr.burstUp == b.o.needs })
	end := time.Now()
	lmCPU1, simCPU1, steal1, wait1 := b.cpu(pids)
	stopSingles()
	singles.wait()
	// Singles added in time get until the deadline to be published.
	b.tr.waitFor(ctx, deadline, func() bool { return singles.allUp(b.tr.first) })

	b.record(added, singles, complete, t0, end)
	r.lmCPU, r.simCPU, r.steal, r.lmWait = lmCPU1-lmCPU0, simCPU1-simCPU0, steal1-steal0, wait1-wait0
	mem, err := readMemory(b.lm.pid())
	if err != nil {
		return err
	}
	r.lmMem = mem
	switch {
	case addErr != nil:
		return addErr
	case !complete:
		return fmt.Errorf("%d of %d needs published within %v", r.placed, b.o.needs, b.o.timeout)
	case b.o.drop:
		return b.failover(ctx)
	}
	return nil
}

// record takes from the tracker what the burst from t0 to end placed.
func (b *bench) record(added map[string]time.Time, singles *singles, complete bool, t0, end time.Time) {
	r := b.res
	b.tr.mu.Lock()
	defer b.tr.mu.Unlock()
	r.complete, r.placed = complete, b.tr.burstUp
	r.elapsed, r.cpuWindow = end.Sub(t0), end.Sub(t0)
	if complete {
		r.elapsed = b.tr.lastBurst.Sub(t0)
	}
	r.burstLat = latencies(added, b.tr.first)
	r.singleLat = latencies(singles.added(), b.tr.first)
	r.singlesAdded, r.singlesFailed = len(singles.added()), singles.failed
	r.restarts = b.tr.restarts
	// The CPU was read at end: placements after it do not count.
	r.placedTotal = r.placed
	for inst := range singles.added() {
		if u, ok := b.tr.first[inst]; ok && !u.at.After(end) {
			r.placedTotal++
		}
	}
}

// addBurst posts the needs in batches, one request after the other (with
// -burst-rate, no faster than that), and returns when each need was added
// (its request's start).
func (b *bench) addBurst(ctx context.Context, deadline time.Time) (map[string]time.Time, error) {
	added := make(map[string]time.Time, b.o.needs)
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	start := time.Now()
	for first := 0; first < b.o.needs; first += b.o.batch {
		if b.o.burstRate > 0 {
			due := start.Add(time.Duration(float64(first) / b.o.burstRate * float64(time.Second)))
			select {
			case <-time.After(time.Until(due)):
			case <-actx.Done():
				return added, actx.Err()
			}
		}
		batch := make([]lanwire.Need, 0, b.o.batch)
		for i := first; i < min(first+b.o.batch, b.o.needs); i++ {
			batch = append(batch, need(fmt.Sprintf("%s%06d", burstPrefix, i)))
		}
		at := time.Now()
		if err := b.client.AddNeeds(actx, batch); err != nil {
			return added, fmt.Errorf("add needs %d-%d: %w", first, first+len(batch)-1, err)
		}
		for _, n := range batch {
			added[n.Instance] = at
		}
	}
	return added, nil
}

// latencies are, sorted, the times from each instance's adding to its
// first up; instances not up are left out.
func latencies(added map[string]time.Time, first map[string]up) []time.Duration {
	out := make([]time.Duration, 0, len(added))
	for inst, at := range added {
		if u, ok := first[inst]; ok {
			out = append(out, u.at.Sub(at))
		}
	}
	slices.Sort(out)
	return out
}

// pids are the LAN manager's and then the workers' pids.
func (b *bench) pids() []int {
	pids := []int{b.lm.pid()}
	for _, w := range b.workers {
		pids = append(pids, w.pid())
	}
	return pids
}

// cpu reads the CPU time of the LAN manager, of the workers together,
// and the machine's steal time; and the LAN manager's run-queue wait.
func (b *bench) cpu(pids []int) (lm, sim, steal, wait time.Duration) {
	for k, pid := range pids {
		t, err := cpuTime(pid)
		if err != nil {
			b.res.notes = append(b.res.notes, fmt.Sprintf("CPU time of pid %d: %v", pid, err))
		}
		if k == 0 {
			lm = t
		} else {
			sim += t
		}
	}
	wait, err := runDelay(pids[0])
	if err != nil {
		b.res.notes = append(b.res.notes, fmt.Sprintf("run-queue wait of the LAN manager: %v", err))
	}
	return lm, sim, stealTime(), wait
}

// sampleFDs keeps the LAN manager's highest descriptor count.
func (b *bench) sampleFDs(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	pid := b.lm.pid()
	for {
		if n, err := fdCount(pid); err == nil {
			b.tr.mu.Lock()
			b.res.lmPeakFDs = max(b.res.lmPeakFDs, n)
			b.tr.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// failover kills the master with the most services and times until each
// of them is up on another master.
func (b *bench) failover(ctx context.Context) error {
	b.tr.mu.Lock()
	count := map[string]int{}
	for _, u := range b.tr.last {
		count[u.machine]++
	}
	victim := ""
	for m, n := range count {
		if victim == "" || n > count[victim] || (n == count[victim] && m < victim) {
			victim = m
		}
	}
	var insts []string
	for inst, u := range b.tr.last {
		if u.machine == victim {
			insts = append(insts, inst)
		}
	}
	b.tr.mu.Unlock()
	idx, err := strconv.Atoi(strings.TrimPrefix(victim, "sim-"))
	if err != nil {
		return fmt.Errorf("failover: machine %q is not a simulated master", victim)
	}
	var w *worker
	for _, x := range b.workers {
		if idx >= x.first && idx < x.first+x.count {
			w = x
		}
	}
	if w == nil {
		return fmt.Errorf("failover: no worker runs master %d", idx)
	}
	f := &failover{machine: victim, services: len(insts), bound: lanwire.DefaultExitFence + lanwire.DefaultMargin + time.Second}
	b.res.failover = f
	t0 := time.Now()
	if _, err := w.drop(idx, 10*time.Second); err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	moved := func() bool {
		f.moved = 0
		var last time.Time
		for _, inst := range insts {
			if u := b.tr.last[inst]; u.machine != victim && u.at.After(t0) {
				f.moved++
				if u.at.After(last) {
					last = u.at
				}
			}
		}
		if f.moved < len(insts) {
			return false
		}
		f.took = last.Sub(t0)
		return true
	}
	const within = time.Minute
	if f.done = b.tr.waitFor(ctx, t0.Add(within), moved); !f.done {
		return fmt.Errorf("failover: %d of %d services of %s published elsewhere within %v", f.moved, len(insts), victim, within)
	}
	return nil
}
