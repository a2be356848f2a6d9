//go:build linux

package faults

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
)

func pidsOf(svcs map[string]lanwire.ServiceRecord) []int {
	var out []int
	for _, s := range svcs {
		out = append(out, s.PID)
	}
	return out
}

func tcpPorts(svcs map[string]lanwire.ServiceRecord) []int {
	var out []int
	for _, s := range svcs {
		out = append(out, int(s.Ports["tcp"]))
	}
	sort.Ints(out)
	return out
}

// bindable reports whether nothing listens on the port now.
func bindable(port int) bool {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func allOn(svcs map[string]lanwire.ServiceRecord, id string) error {
	for inst, s := range svcs {
		if s.MachineID != id {
			return fmt.Errorf("service %s is on %s, want %s", inst, s.MachineID, id)
		}
	}
	return nil
}

// TestKillMaster: the children of a master killed with SIGKILL do not
// outlive it: its keeper stops them (SIGTERM at once, SIGKILL by the exit
// fence). The master started again on the same state dir satisfies the
// needs again, once each, whether it comes back after the LAN manager
// fenced the dead one or at once, while its keeper still runs.
func TestKillMaster(t *testing.T) {
	t.Run("restart after the fence", testKillMasterAfterFence)
	t.Run("restart at once", testKillMasterAtOnce)
}

// testKillMasterAfterFence: the LAN manager fences the killed master
// exit fence + margin after its link ended and takes its services down;
// its keeper, its children gone, exits. The master started again finds
// nothing left and runs every need again.
func testKillMasterAfterFence(t *testing.T) {
	exitFence, margin := e2e.TestFence(e2e.TestLease), e2e.TestMargin
	orphans := e2e.NewFaultOrphans(t)
	lan := e2e.StartFaultLAN(t, e2e.ShortDir(t), 0, token)
	m1 := e2e.StartFaultMaster(t, lan, "m1", 10, 0)
	names := addNeeds(t, lan, "k", 0, 5)
	before := waitServices(t, lan, setOf(names...), 90*time.Second)
	if err := allOn(before, "m1"); err != nil {
		t.Fatal(err)
	}
	orphans.Add(pidsOf(before)...)
	keeper := e2e.FaultKeeperPID(filepath.Join(m1.Dir, "state"))
	if keeper == 0 {
		t.Fatal("no live keeper recorded in the state dir")
	}
	watch := watchSeen(t, before, map[string]string{m1.Socket: "m1"})

	dead := m1.Proc
	killed := e2e.KillAlone(t, dead)
	// Polled together, each noted when first seen: the children dead (by
	// the keeper), the keeper gone, and the LAN manager's fence (services
	// down, needs offered again).
	var childrenGone, keeperGone, fenced time.Duration
	e2e.Eventually(t, 30*time.Second, func() error {
		if childrenGone == 0 && !slices.ContainsFunc(pidsOf(before), e2e.FaultPIDAlive) {
			childrenGone = time.Since(killed)
		}
		if keeperGone == 0 && !e2e.FaultPIDAlive(keeper) {
			keeperGone = time.Since(killed)
		}
		if fenced == 0 {
			svcs, err := services(lan)
			if err != nil {
				return err
			}
			states, err := needStates(lan)
			if err != nil {
				return err
			}
			pending := 0
			for _, n := range names {
				if states[n] == adminapi.StatePending {
					pending++
				}
			}
			if len(svcs) == 0 && pending == len(names) {
				fenced = time.Since(killed)
			}
		}
		switch {
		case childrenGone == 0:
			return errors.New("children outlive their killed master")
		case keeperGone == 0:
			return fmt.Errorf("keeper (pid %d) still runs, its children gone", keeper)
		case fenced == 0:
			return errors.New("services still published, or needs not offered again, after the master died")
		}
		return nil
	})
	died := lastSeen(watch, "m1", before, killed)
	if fenced < exitFence+margin {
		t.Errorf("services down %v after the kill, before the fence (exit fence %v + margin %v)", fenced, exitFence, margin)
	}
	if died > exitFence+margin {
		t.Errorf("a child was alive %v after the kill, past the exit fence (%v) + margin (%v)", died, exitFence, margin)
	}
	if !strings.Contains(dead.Output(), "stopping every child") {
		t.Errorf("the keeper did not log stopping the children")
	}
	t.Logf("after the kill: children last seen alive %v (all gone seen %v), keeper gone %v, services down and needs offered again %v (exit fence %v, margin %v)",
		died.Round(time.Millisecond), childrenGone.Round(time.Millisecond), keeperGone.Round(time.Millisecond), fenced.Round(time.Millisecond), exitFence, margin)

	restarted := time.Now()
	m1.Run(t)
	t.Logf("master up again in %s", time.Since(restarted).Round(time.Millisecond))
	if strings.Contains(m1.Output(), "keeper an earlier master left") {
		t.Errorf("the new master found a keeper left running, after the old one exited")
	}
	after := waitServices(t, lan, setOf(names...), 90*time.Second)
	t.Logf("needs satisfied again %s after the restart", time.Since(restarted).Round(time.Millisecond))
	orphans.Add(pidsOf(after)...)
	if err := allOn(after, "m1"); err != nil {
		t.Fatal(err)
	}
	samePorts(t, before, after)
	e2e.Eventually(t, 30*time.Second, func() error {
		if err := checkPlacement(t, after, m1); err != nil {
			return err
		}
		return checkServing(after)
	})
	noOverlaps(t, watch)
}

// testKillMasterAtOnce: the killed master's children ignore SIGTERM and
// the exit fence is long, so its keeper is still running them when the
// master is started again on the same state dir. The new master stops
// that keeper (asking, then killing it and its children's groups) before
// it runs anything: by the time it is up the old children are dead, and
// it runs every need again, once.
func testKillMasterAtOnce(t *testing.T) {
	orphans := e2e.NewFaultOrphans(t)
	// An exit fence longer than a new master waits for the keeper it
	// asked to stop (the default exit fence + 5s), so it has to kill it.
	lan := e2e.StartFaultLAN(t, e2e.ShortDir(t), 0, token, "-lease", "20s", "-fence-grace", "2s", "-exit-fence", "10s")
	m1 := e2e.StartFaultMasterWith(t, lan, "m1", 10, 0, map[string]any{"stubborn": e2e.FaultHelperModule("ignoreterm")})
	var names []string
	for i := range 3 {
		name := fmt.Sprintf("st-%03d", i)
		ctx, cancel := ctx30()
		err := lan.Admin.AddNeed(ctx, lanwire.Need{Instance: name, Module: "stubborn", Protocols: []string{"tcp"}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	before := waitServices(t, lan, setOf(names...), 90*time.Second)
	orphans.Add(pidsOf(before)...)
	keeper := e2e.FaultKeeperPID(filepath.Join(m1.Dir, "state"))
	if keeper == 0 {
		t.Fatal("no live keeper recorded in the state dir")
	}
	t.Cleanup(func() {
		if e2e.FaultKeeperPID(filepath.Join(m1.Dir, "state")) == keeper {
			_ = syscall.Kill(keeper, syscall.SIGKILL)
		}
	})
	watch := watchSeen(t, before, map[string]string{m1.Socket: "m1"})

	dead := m1.Proc
	killed := e2e.KillAlone(t, dead)
	dead.WaitOutput("stopping every child", 30*time.Second)
	for inst, s := range before {
		if !e2e.FaultPIDAlive(s.PID) {
			t.Fatalf("child %s (pid %d) died of SIGTERM; the left keeper is then untested", inst, s.PID)
		}
	}
	if !e2e.FaultPIDAlive(keeper) {
		t.Fatal("the keeper exited before its exit fence")
	}

	m1.Run(t)
	up := time.Since(killed)
	// Checked at once: the new master stopped the old keeper and its
	// children before it came up.
	if e2e.FaultPIDAlive(keeper) {
		t.Errorf("old keeper (pid %d) still runs %v after the kill, the new master up", keeper, up)
	}
	for inst, s := range before {
		if e2e.FaultPIDAlive(s.PID) {
			t.Errorf("old child %s (pid %d) still runs, the new master up", inst, s.PID)
		}
	}
	out := m1.Output()
	if !strings.Contains(out, "stopping the keeper an earlier master left") || !strings.Contains(out, fmt.Sprintf("pid=%d", keeper)) {
		t.Errorf("the new master did not log stopping keeper %d", keeper)
	}
	killedKeeper := strings.Contains(out, "the earlier keeper did not stop; killing it")
	// The old records stay published until the new master's hello, which
	// lists none of them, ends those copies.
	replacedOnce(t, lan, before, m1, 90*time.Second, orphans, watch)
	t.Logf("new master up %v after the kill (had to kill the old keeper: %v); old children last seen alive %v after the kill; needs satisfied again %v after it",
		up.Round(time.Millisecond), killedKeeper, lastSeen(watch, "m1", before, killed).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
}

// waitReplaced polls until every service of before is published again on
// machine id with another pid, and returns them.
func waitReplaced(t *testing.T, lan *e2e.FaultLAN, before map[string]lanwire.ServiceRecord, id string, d time.Duration) map[string]lanwire.ServiceRecord {
	t.Helper()
	var got map[string]lanwire.ServiceRecord
	e2e.Eventually(t, d, func() error {
		var err error
		if got, err = services(lan); err != nil {
			return err
		}
		if s := diff(keys(before), keys(got)); s != "" {
			return fmt.Errorf("services: %s", s)
		}
		for inst, s := range got {
			if s.MachineID != id || s.PID == before[inst].PID {
				return fmt.Errorf("service %s is %s pid %d, was pid %d: not replaced on %s yet", inst, s.MachineID, s.PID, before[inst].PID, id)
			}
		}
		return nil
	})
	return got
}

// replacedOnce waits until every service of before runs again, once, on
// m (waitReplaced), and serves there; then it stops watch and fails the
// test if it saw any instance with two live copies.
func replacedOnce(t *testing.T, lan *e2e.FaultLAN, before map[string]lanwire.ServiceRecord, m *e2e.FaultMaster, d time.Duration, orphans *e2e.FaultOrphans, watch *e2e.CopyWatch) map[string]lanwire.ServiceRecord {
	t.Helper()
	after := waitReplaced(t, lan, before, m.ID, d)
	orphans.Add(pidsOf(after)...)
	e2e.Eventually(t, 30*time.Second, func() error {
		if err := checkPlacement(t, after, m); err != nil {
			return err
		}
		return checkServing(after)
	})
	noOverlaps(t, watch)
	return after
}

// watchSeen starts a CopyWatch of masters (socket → label) and waits
// until it has seen the children of the services recs.
func watchSeen(t *testing.T, recs map[string]lanwire.ServiceRecord, masters map[string]string) *e2e.CopyWatch {
	t.Helper()
	w := e2e.WatchCopies(t, 20*time.Millisecond, masters)
	e2e.Eventually(t, 30*time.Second, func() error {
		for inst, r := range recs {
			if !slices.ContainsFunc(w.Procs("", inst), func(p e2e.CopyProc) bool { return p.PID == r.PID }) {
				return fmt.Errorf("watch has not seen %s (pid %d)", inst, r.PID)
			}
		}
		return nil
	})
	return w
}

// lastSeen is when, after since, the last of the services' children in
// recs was last seen alive on master.
func lastSeen(w *e2e.CopyWatch, master string, recs map[string]lanwire.ServiceRecord, since time.Time) time.Duration {
	var last time.Duration
	for inst, r := range recs {
		for _, p := range w.Procs(master, inst) {
			if p.PID == r.PID {
				last = max(last, p.Last.Sub(since))
			}
		}
	}
	return last
}

// noOverlaps stops the watch and fails the test for every sample in
// which an instance had two live children.
func noOverlaps(t *testing.T, w *e2e.CopyWatch) {
	t.Helper()
	w.Stop()
	for _, o := range w.Overlaps() {
		t.Errorf("two live copies: %s", o)
	}
	n, gap := w.Samples()
	t.Logf("/proc sampled %d times, at most %v apart", n, gap.Round(time.Millisecond))
}

// samePorts checks that the killed children's ports are free again: the
// new ones usually take the same, but the port office skips a port
// another program holds, and other tests on this machine may probe ports
// for a moment; only a port still taken now is a leak.
func samePorts(t *testing.T, before, after map[string]lanwire.ServiceRecord) {
	t.Helper()
	if b, a := tcpPorts(before), tcpPorts(after); fmt.Sprint(a) != fmt.Sprint(b) {
		for _, p := range b {
			if !slices.Contains(a, p) && !bindable(p) {
				t.Errorf("port %d of a killed child is still taken after the restart (ports before %v, after %v)", p, b, a)
			}
		}
		t.Logf("ports after the restart %v, before %v", a, b)
	}
}

// TestKillMasterMovesNeeds: with a second master present, the needs of a
// master killed with SIGKILL move to it; the killed master's children die
// by its keeper, and the master, started again, takes none of the moved
// needs back.
func TestKillMasterMovesNeeds(t *testing.T) {
	orphans := e2e.NewFaultOrphans(t)
	lan := e2e.StartFaultLAN(t, e2e.ShortDir(t), 0, token)
	m1 := e2e.StartFaultMaster(t, lan, "m1", 10, 0)
	names := addNeeds(t, lan, "mv", 0, 6)
	before := waitServices(t, lan, setOf(names...), 90*time.Second)
	if err := allOn(before, "m1"); err != nil {
		t.Fatal(err)
	}
	orphans.Add(pidsOf(before)...)
	m2 := e2e.StartFaultMaster(t, lan, "m2", 10, 0)

	e2e.FaultKill9(t, m1.Proc)
	moved := waitServicesOn(t, lan, setOf(names...), "m2", 60*time.Second)
	orphans.Add(pidsOf(moved)...)

	m1.Run(t)
	e2e.Eventually(t, 30*time.Second, func() error {
		for inst, s := range before {
			if e2e.FaultPIDAlive(s.PID) {
				return fmt.Errorf("leftover child %s (pid %d) still alive after the master restarted", inst, s.PID)
			}
		}
		return nil
	})
	// Let m1 reconnect and see the offers before judging placement.
	e2e.Eventually(t, 30*time.Second, func() error { return linkConnected(t, m1.Socket) })
	e2e.Eventually(t, 30*time.Second, func() error {
		svcs, err := services(lan)
		if err != nil {
			return err
		}
		for inst, s := range svcs {
			if old := moved[inst]; s.MachineID != "m2" || s.PID != old.PID {
				return fmt.Errorf("service %s moved again: now %s pid %d, was m2 pid %d", inst, s.MachineID, s.PID, old.PID)
			}
		}
		if s := diff(setOf(names...), keys(svcs)); s != "" {
			return fmt.Errorf("services: %s", s)
		}
		if err := checkPlacement(t, svcs, m1, m2); err != nil {
			return err
		}
		return checkServing(svcs)
	})
}

// TestMasterStopsAnswering: a master frozen with SIGSTOP cannot renew
// its lease, so its keeper SIGKILLs its children when the lease runs out;
// the LAN manager drops the silent link and moves the needs to the other
// master lease + margin after it last heard the frozen one, so no need
// runs twice at any moment. Continued, the master finds its lease over,
// reconnects and runs nothing of the moved needs.
func TestMasterStopsAnswering(t *testing.T) {
	lease, margin := e2e.TestLease, e2e.TestMargin
	orphans := e2e.NewFaultOrphans(t)
	lan := e2e.StartFaultLAN(t, e2e.ShortDir(t), 0, token)
	m1 := e2e.StartFaultMaster(t, lan, "m1", 10, 0)
	pid := m1.Cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	names := addNeeds(t, lan, "fz", 0, 4)
	before := waitServices(t, lan, setOf(names...), 90*time.Second)
	if err := allOn(before, "m1"); err != nil {
		t.Fatal(err)
	}
	orphans.Add(pidsOf(before)...)
	m2 := e2e.StartFaultMaster(t, lan, "m2", 10, 0)
	watch := watchSeen(t, before, map[string]string{m1.Socket: "m1", m2.Socket: "m2"})

	stopped := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	moved := waitServicesOn(t, lan, setOf(names...), "m2", 60*time.Second)
	movedAfter := time.Since(stopped)
	orphans.Add(pidsOf(moved)...)
	for inst, s := range before {
		if e2e.FaultPIDAlive(s.PID) {
			t.Errorf("child %s (pid %d) of the frozen master still runs, its need moved", inst, s.PID)
		}
	}
	died := lastSeen(watch, "m1", before, stopped)
	if died > lease+margin {
		t.Errorf("a child of the frozen master was alive %v after SIGSTOP, past its lease (%v) + margin (%v)", died, lease, margin)
	}
	if !strings.Contains(m1.Output(), "the master's LAN lease ran out: killed the fenced children") {
		t.Errorf("the frozen master's keeper did not log the end of its lease")
	}

	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 60*time.Second, func() error {
		if err := linkConnected(t, m1.Socket); err != nil {
			return err
		}
		svcs, err := services(lan)
		if err != nil {
			return err
		}
		for inst, s := range svcs {
			if old := moved[inst]; s.MachineID != "m2" || s.PID != old.PID {
				return fmt.Errorf("service %s moved again: now %s pid %d, was m2 pid %d", inst, s.MachineID, s.PID, old.PID)
			}
		}
		if s := diff(setOf(names...), keys(svcs)); s != "" {
			return fmt.Errorf("services: %s", s)
		}
		if err := checkPlacement(t, svcs, m1, m2); err != nil {
			return err
		}
		return checkServing(svcs)
	})
	noOverlaps(t, watch)
	for _, p := range watch.Procs("m1", "") {
		if p.First.After(stopped) {
			t.Errorf("m1 started %s (pid %d) after it was frozen", p.Instance, p.PID)
		}
	}
	t.Logf("frozen master's children last seen alive %v after SIGSTOP; needs on m2 after %v (lease %v, margin %v)",
		died.Round(time.Millisecond), movedAfter.Round(time.Millisecond), lease, margin)
}
