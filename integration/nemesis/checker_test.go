//go:build linux

package nemesis

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/allex-go/allex/internal/procfs"

	"github.com/allex-go/allex/internal/netns"
)

// The checker samples two things, each on its own goroutine so that a
// slow LAN manager never slows the process scan:
//
//   - every process on the machine (all namespaces share the pid
//     namespace, so /proc shows every host's): a live copy of an instance
//     is a live, non-zombie process that leads its process group and has
//     ALLEX_INSTANCE=<instance> in its environment; its ALLEX_MASTER_SOCKET
//     names the master, hence the host, that started it;
//   - the LAN manager's registry (GET /v1/services) and needs
//     (GET /v1/needs), through a dialer in the LAN manager's namespace.
//
// From them it keeps: every overlap (an instance with two or more live
// copies in a sample), every acknowledged need missing from a needs list,
// and a timeline of whether the LAN is "ok": every acknowledged need has
// exactly one live copy, its master is healthy (running, not frozen, not
// cut off), and the registry publishes that copy's pid and host address.

// procKey names one process: pids are recycled, start times are not.
type procKey struct {
	PID   int
	Start uint64 // clock ticks since boot, field 22 of /proc/<pid>/stat
}

// liveCopy is one live copy of an instance.
type liveCopy struct {
	procKey
	Socket string // its ALLEX_MASTER_SOCKET
}

// supervisor is a master process as the checker judges it; the harness
// swaps its proc on restarts and marks it faulted while it freezes or
// kills it.
type supervisor struct {
	label   string
	host    *netns.Host
	proc    *proc
	faulted bool
	// intruder: a clone or a second master, whose leftovers the harness
	// may remove once it is gone.
	intruder bool
}

func (s *supervisor) healthy() bool {
	return s.proc != nil && s.proc.running() && !s.faulted && !s.host.IsCut()
}

// supView is a supervisor's state at one sample.
type supView struct {
	label, ip string
	healthy   bool
}

// registry is one read of the LAN manager's services and needs.
type registry struct {
	At       time.Time // when the read began
	Err      string    // "" when both calls answered
	Services map[string]service
	Needs    map[string]string // instance → state
}

// mark is a change of the LAN's state; the timeline holds only changes.
type mark struct {
	At        time.Time
	OK, Avail bool
	Why       string // why not ok, at the change
}

// overlap is one instance running twice or more, from the first sample
// showing it to the first sample not showing it.
type overlap struct {
	Instance   string
	Start, End time.Time
	Max        int
	Copies     map[procKey]string // every copy seen, with its master's label
}

func (o *overlap) duration() time.Duration { return o.End.Sub(o.Start) }

func (o *overlap) describe() string {
	keys := make([]procKey, 0, len(o.Copies))
	for k := range o.Copies {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].PID < keys[j].PID })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s pid %d", o.Copies[k], k.PID))
	}
	return fmt.Sprintf("%s ×%d for %s: %s", o.Instance, o.Max, o.duration().Round(time.Millisecond), strings.Join(parts, ", "))
}

// missing is an acknowledged need absent from the needs lists read
// between Start and End.
type missing struct {
	Instance   string
	Start, End time.Time
}

// samplingStats shows the sampling kept its promise.
type samplingStats struct {
	Scans, Polls, PollsOK   int
	MaxScanGap, MaxPollGap  time.Duration
	MaxScanGapAt            time.Time
	MaxScanTime             time.Duration // one scan of /proc, judged
	LateScans               int           // gaps over twice the interval
	DoubledSamples          int           // scans that showed an overlap
	MostDoubled             int           // most instances doubled in one scan
	PublishedTwice          int           // registry reads listing an instance twice
	lastScan, lastPollStart time.Time
}

type ident struct {
	start            uint64
	instance, socket string
}

type checker struct {
	prefix   string // every instance of this run starts with it
	admin    *admin
	interval time.Duration
	// freshness: how old a registry read may be to judge a sample with.
	freshness time.Duration

	idents map[int]ident // scan goroutine only

	mu          sync.Mutex
	sups        map[string]*supervisor // by socket
	acked       map[string]time.Time
	reg         registry
	last        map[string][]liveCopy
	marks       []mark
	lastWhy     string
	lastAt      time.Time // of the last sample
	lastOK      bool
	open        map[string]*overlap
	overlaps    []*overlap
	openMissing map[string]*missing
	missing     []*missing
	stats       samplingStats

	stopOnce sync.Once
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

func newChecker(prefix string, a *admin, interval time.Duration) *checker {
	return &checker{
		prefix: prefix, admin: a, interval: interval, freshness: 10 * interval,
		idents: map[int]ident{}, sups: map[string]*supervisor{}, acked: map[string]time.Time{},
		open: map[string]*overlap{}, openMissing: map[string]*missing{}, stopCh: make(chan struct{}),
	}
}

func (c *checker) start() {
	for _, fn := range []func(){c.sampleProcs, c.pollRegistry} {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			tick := time.NewTicker(c.interval)
			defer tick.Stop()
			for {
				select {
				case <-c.stopCh:
					return
				case <-tick.C:
					fn()
				}
			}
		}()
	}
}

// stop ends sampling and closes whatever is still open at that moment.
func (c *checker) stop() {
	c.stopOnce.Do(func() {
		close(c.stopCh)
		c.wg.Wait()
		c.mu.Lock()
		defer c.mu.Unlock()
		now := time.Now()
		for _, o := range c.open {
			o.End = now
		}
		for _, m := range c.openMissing {
			m.End = now
		}
		c.open, c.openMissing = map[string]*overlap{}, map[string]*missing{}
	})
}

// addSupervisor makes copies started with socket count as that master's.
func (c *checker) addSupervisor(socket, label string, h *netns.Host, intruder bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sups[socket] = &supervisor{label: label, host: h, intruder: intruder}
}

// setProc records the master's new process, not faulted.
func (c *checker) setProc(socket string, p *proc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sups[socket].proc, c.sups[socket].faulted = p, false
}

func (c *checker) setFaulted(socket string, faulted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sups[socket].faulted = faulted
}

// ack records a need the LAN manager answered 201 for.
func (c *checker) ack(instance string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acked[instance] = at
}

// copiesOf lists the live copies of the master on socket at the last scan.
func (c *checker) copiesOf(socket string) []procKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []procKey
	for _, cs := range c.last {
		for _, cp := range cs {
			if cp.Socket == socket {
				out = append(out, cp.procKey)
			}
		}
	}
	return out
}

// leftovers lists the live copies of intruders that are no longer running.
func (c *checker) leftovers() map[string][]procKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]procKey{}
	for _, cs := range c.last {
		for _, cp := range cs {
			if s := c.sups[cp.Socket]; s != nil && s.intruder && (s.proc == nil || !s.proc.running()) {
				out[s.label] = append(out[s.label], cp.procKey)
			}
		}
	}
	return out
}

// sampleProcs is one scan of /proc, judged with the latest registry read.
func (c *checker) sampleProcs() {
	now := time.Now()
	copies := c.scan()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &c.stats
	defer func() { st.MaxScanTime = max(st.MaxScanTime, time.Since(now)) }()
	if !st.lastScan.IsZero() {
		gap := now.Sub(st.lastScan)
		if gap > st.MaxScanGap {
			st.MaxScanGap, st.MaxScanGapAt = gap, now
		}
		if gap > 2*c.interval {
			st.LateScans++
		}
	}
	st.lastScan = now
	st.Scans++
	c.last = copies
	c.trackOverlaps(now, copies)
	views := map[string]supView{}
	for sock, s := range c.sups {
		views[sock] = supView{label: s.label, ip: s.host.IP, healthy: s.healthy()}
	}
	reg := c.reg
	if reg.Err == "" && now.Sub(reg.At) > c.freshness {
		reg.Err = fmt.Sprintf("last registry read is %s old", now.Sub(reg.At).Round(time.Millisecond))
	}
	ok, avail, why := judge(slices.Sorted(maps.Keys(c.acked)), copies, reg, views)
	c.lastWhy, c.lastAt, c.lastOK = why, now, ok
	if n := len(c.marks); n == 0 || c.marks[n-1].OK != ok || c.marks[n-1].Avail != avail {
		c.marks = append(c.marks, mark{At: now, OK: ok, Avail: avail, Why: why})
	}
}

func (c *checker) trackOverlaps(now time.Time, copies map[string][]liveCopy) {
	doubled := 0
	for inst, cs := range copies {
		if len(cs) < 2 {
			continue
		}
		doubled++
		o := c.open[inst]
		if o == nil {
			o = &overlap{Instance: inst, Start: now, Copies: map[procKey]string{}}
			c.open[inst] = o
			c.overlaps = append(c.overlaps, o)
		}
		o.Max = max(o.Max, len(cs))
		for _, cp := range cs {
			o.Copies[cp.procKey] = c.labelLocked(cp.Socket)
		}
	}
	for inst, o := range c.open {
		if len(copies[inst]) < 2 {
			o.End = now
			delete(c.open, inst)
		}
	}
	if doubled > 0 {
		c.stats.DoubledSamples++
		c.stats.MostDoubled = max(c.stats.MostDoubled, doubled)
	}
}

func (c *checker) labelLocked(socket string) string {
	if s := c.sups[socket]; s != nil {
		return s.label
	}
	return "unknown master " + socket
}

// settledTicks: a process younger than this (2s) may not have exec'd
// yet and still show its parent's environment, so its identity is read
// again at the next scan.
const settledTicks = 200

// scan lists the live copies of this run's instances by instance.
func (c *checker) scan() map[string][]liveCopy {
	all, err := procfs.Pids()
	if err != nil {
		return nil
	}
	now := procfs.BootTicks()
	seen := make(map[int]bool, len(all))
	out := map[string][]liveCopy{}
	for _, pid := range all {
		st, err := procfs.ReadStat(pid)
		if err != nil || !st.Live() || st.Pgrp != pid {
			continue
		}
		seen[pid] = true
		id, ok := c.idents[pid]
		if !ok || id.start != st.StartTime {
			id, ok = readIdent(pid, st.StartTime)
			if !ok {
				continue
			}
			if id.instance != "" || now-st.StartTime > settledTicks {
				c.idents[pid] = id
			}
		}
		if strings.HasPrefix(id.instance, c.prefix) {
			out[id.instance] = append(out[id.instance], liveCopy{procKey{pid, st.StartTime}, id.socket})
		}
	}
	for pid := range c.idents {
		if !seen[pid] {
			delete(c.idents, pid)
		}
	}
	return out
}

// readIdent reads the instance and master socket from a process's
// environment; false when the process is gone.
func readIdent(pid int, start uint64) (ident, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ident{}, false
	}
	id := ident{start: start}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("ALLEX_INSTANCE=")); ok {
			id.instance = string(v)
		} else if v, ok := bytes.CutPrefix(kv, []byte("ALLEX_MASTER_SOCKET=")); ok {
			id.socket = string(v)
		}
	}
	return id, true
}

// judge says whether the LAN is ok (see the top of this file) and whether
// it at least serves every need (a published copy on a healthy master),
// with the first reason it is not ok.
func judge(acked []string, copies map[string][]liveCopy, reg registry, sups map[string]supView) (ok, avail bool, why string) {
	if reg.Err != "" {
		return false, false, "registry: " + reg.Err
	}
	ok, avail = true, true
	for _, inst := range acked {
		cs := copies[inst]
		rec, published := reg.Services[inst]
		good := false
		for _, cp := range cs {
			s, known := sups[cp.Socket]
			if known && s.healthy && published && rec.PID == cp.PID && rec.Address == s.ip {
				good = true
			}
		}
		avail = avail && good
		if (len(cs) != 1 || !good) && ok {
			ok, why = false, describe(inst, cs, rec, published, sups)
		}
	}
	return ok, avail, why
}

func describe(inst string, cs []liveCopy, rec service, published bool, sups map[string]supView) string {
	var parts []string
	for _, cp := range cs {
		s, known := sups[cp.Socket]
		state := "healthy"
		switch {
		case !known:
			s.label, state = cp.Socket, "unknown master"
		case !s.healthy:
			state = "master down, frozen or cut"
		}
		parts = append(parts, fmt.Sprintf("%s pid %d (%s)", s.label, cp.PID, state))
	}
	pub := "not published"
	if published {
		pub = fmt.Sprintf("published %s pid %d on %s", rec.Machine, rec.PID, rec.Address)
	}
	return fmt.Sprintf("%s: %d copies [%s], %s", inst, len(cs), strings.Join(parts, ", "), pub)
}

// pollRegistry reads the services and needs once and checks that every
// need acknowledged before the read is listed.
func (c *checker) pollRegistry() {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	reg := registry{At: start}
	svcs, err := c.admin.services(ctx)
	var needs []needStatus
	if err == nil {
		needs, err = c.admin.needs(ctx)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &c.stats
	if !st.lastPollStart.IsZero() {
		st.MaxPollGap = max(st.MaxPollGap, start.Sub(st.lastPollStart))
	}
	st.lastPollStart = start
	st.Polls++
	if err != nil {
		reg.Err = err.Error()
		c.reg = reg
		return
	}
	st.PollsOK++
	reg.Services = make(map[string]service, len(svcs))
	for _, s := range svcs {
		if _, dup := reg.Services[s.Instance]; dup {
			st.PublishedTwice++
		}
		reg.Services[s.Instance] = s
	}
	reg.Needs = make(map[string]string, len(needs))
	for _, n := range needs {
		reg.Needs[n.Need.Instance] = n.State
	}
	c.reg = reg
	c.trackMissing(start, reg.Needs)
}

func (c *checker) trackMissing(readAt time.Time, needs map[string]string) {
	for inst, at := range c.acked {
		_, listed := needs[inst]
		m := c.openMissing[inst]
		switch {
		case !listed && at.Before(readAt) && m == nil:
			m = &missing{Instance: inst, Start: readAt, End: readAt}
			c.openMissing[inst] = m
			c.missing = append(c.missing, m)
		case !listed && m != nil:
			m.End = readAt
		case listed && m != nil:
			m.End = readAt
			delete(c.openMissing, inst)
		}
	}
}

// okPick and availPick choose which state recovery waits for.
func okPick(m mark) bool    { return m.OK }
func availPick(m mark) bool { return m.Avail }

// recovery is how long after start the LAN was back in the state pick
// names (held for stable) once the operation had first disturbed it: the
// first run of that state lasting stable that begins after the first
// sample without it at or after start. A LAN never disturbed from start
// until end+stable took 0. ok is false while the answer is not known yet.
func (c *checker) recovery(start, end time.Time, stable time.Duration, pick func(mark) bool) (time.Duration, bool) {
	c.mu.Lock()
	marks := slices.Clone(c.marks)
	c.mu.Unlock()
	return recoveryIn(marks, start, end, stable, time.Now(), pick)
}

func recoveryIn(marks []mark, start, end time.Time, stable time.Duration, now time.Time, pick func(mark) bool) (time.Duration, bool) {
	first := sort.Search(len(marks), func(i int) bool { return !marks[i].At.Before(start) })
	disturbed := -1 // index of the first mark without the state, or first-1 if already so at start
	if first > 0 && !pick(marks[first-1]) {
		disturbed = first - 1
	} else {
		for j := first; j < len(marks); j++ {
			if !pick(marks[j]) {
				disturbed = j
				break
			}
		}
	}
	if disturbed < 0 {
		return 0, now.Sub(end) >= stable
	}
	for i := disturbed + 1; i < len(marks); i++ {
		if !pick(marks[i]) || pick(marks[i-1]) {
			continue
		}
		e := now
		for j := i + 1; j < len(marks); j++ {
			if !pick(marks[j]) {
				e = marks[j].At
				break
			}
		}
		if e.Sub(marks[i].At) >= stable {
			return marks[i].At.Sub(start), true
		}
	}
	return 0, false
}

// notOK is how long the LAN was not ok between from and to.
func (c *checker) notOK(from, to time.Time) time.Duration {
	c.mu.Lock()
	marks := slices.Clone(c.marks)
	c.mu.Unlock()
	return notOKIn(marks, from, to)
}

func notOKIn(marks []mark, from, to time.Time) time.Duration {
	var total time.Duration
	for i, m := range marks {
		if m.OK {
			continue
		}
		s, e := m.At, to
		if i+1 < len(marks) {
			e = marks[i+1].At
		}
		if s.Before(from) {
			s = from
		}
		if e.After(to) {
			e = to
		}
		if e.After(s) {
			total += e.Sub(s)
		}
	}
	return total
}

// okSince says whether the last sample, taken after t, found the LAN ok.
func (c *checker) okSince(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastOK && c.lastAt.After(t)
}

// okFor is how long the LAN has been ok, as of the last sample.
func (c *checker) okFor() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.lastOK || len(c.marks) == 0 {
		return 0
	}
	return c.lastAt.Sub(c.marks[len(c.marks)-1].At)
}

// relapses counts the times the LAN stopped being ok after from, before
// to, and how long it was not ok then.
func (c *checker) relapses(from, to time.Time) (int, time.Duration) {
	c.mu.Lock()
	marks := slices.Clone(c.marks)
	c.mu.Unlock()
	n := 0
	for i, m := range marks {
		if !m.OK && m.At.After(from) && m.At.Before(to) && (i == 0 || marks[i-1].OK) {
			n++
		}
	}
	return n, notOKIn(marks, from, to)
}

// why is the reason the LAN is not ok now ("" when it is).
func (c *checker) why() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastWhy
}

// checkResults is everything the checker kept, for the report.
type checkResults struct {
	Overlaps []*overlap
	Missing  []*missing
	Stats    samplingStats
	Acked    int
	Final    registry
}

func (c *checker) results() checkResults {
	c.mu.Lock()
	defer c.mu.Unlock()
	return checkResults{Overlaps: slices.Clone(c.overlaps), Missing: slices.Clone(c.missing), Stats: c.stats,
		Acked: len(c.acked), Final: c.reg}
}
