//go:build !windows

package lan_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// wait is the bound of every poll: generous, for a loaded 2-core machine
// running the race detector.
const wait = 60 * time.Second

func demoNeed(instance string) lanwire.Need {
	return lanwire.Need{Instance: instance, Module: "demo", Protocols: []string{"tcp", "http"}}
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%02d", prefix, i+1)
	}
	return out
}

// alive lists the master's children that are not finished, by instance,
// through `allexctl ps -o json`.
func alive(t *testing.T, m *e2e.Master) map[string]int {
	t.Helper()
	out := e2e.MustCtl(t, m.Socket, "-o", "json", "ps")
	var resp struct {
		Processes []struct {
			Instance string `json:"instance"`
			Pid      int    `json:"pid"`
			State    string `json:"state"`
		} `json:"processes"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("ps -o json: %v\n%s", err, out)
	}
	got := map[string]int{}
	for _, p := range resp.Processes {
		switch p.State {
		case "PROCESS_STATE_STARTING", "PROCESS_STATE_RUNNING", "PROCESS_STATE_READY", "PROCESS_STATE_STOPPING":
			got[p.Instance] = p.Pid
		}
	}
	return got
}

func processGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

func TestTokenRefused(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	// A join token of the LAN's CA whose secret is wrong: the join is
	// refused, so the master never links.
	fp, _, _ := lanpki.SplitPin(lan.Token)
	wrong := "K10" + strings.TrimPrefix(fp, "sha256:") + "::abcdef.0123456789abcdef0123456789abcdef"
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1", Token: wrong})
	m.WaitOutput("missing or wrong bearer token", wait)
	if ms := lan.Machines(t); len(ms) != 0 {
		t.Errorf("LAN manager lists machines for a refused master: %+v", ms)
	}
	lan.AddNeeds(t, demoNeed("d1"))
	// The refused master keeps retrying; it must never get the need.
	time.Sleep(time.Second)
	if got := alive(t, m); len(got) != 0 {
		t.Errorf("refused master runs %v", got)
	}
	if n := lan.Needs(t)["d1"]; n.State != adminapi.StatePending {
		t.Errorf("need d1 is %q, want pending", n.State)
	}
}

func TestNeedPublishedWithReachablePorts(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	w := lan.Watch(t, "demo")
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	lan.MustCtl(t, "needs", "add", "-module", "demo", "-protocols", "tcp,http", "-property", "color=blue", "d1")

	rec := lan.WaitServices(t, wait, "d1")["d1"]
	if rec.MachineID != "m1" || rec.Address != "127.0.0.1" || rec.Module != "demo" || rec.Properties["color"] != "blue" {
		t.Errorf("record = %+v", rec)
	}
	if len(rec.Ports) != 2 || rec.Ports["tcp"] < uint16(m.TCP) || rec.Ports["tcp"] >= uint16(m.HTTP) ||
		rec.Ports["http"] < uint16(m.HTTP) || rec.Ports["http"] >= uint16(m.WS) {
		t.Errorf("ports %v outside the master's ranges tcp %d http %d", rec.Ports, m.TCP, m.HTTP)
	}
	if err := e2e.Dial(rec); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", rec.Ports["http"]))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("hello from d1 (pid %d)", rec.PID); !strings.Contains(string(body), want) {
		t.Errorf("http body %q lacks %q", body, want)
	}
	if pid := alive(t, m)["d1"]; pid != rec.PID {
		t.Errorf("master runs d1 as pid %d, LAN manager publishes pid %d", pid, rec.PID)
	}
	n := lan.Needs(t)["d1"]
	if n.State != adminapi.StateSatisfied || n.Machine != "m1" {
		t.Errorf("need d1 = %+v, want satisfied on m1", n)
	}
	w.WaitFor(t, wait, func(evs []e2e.TimedEvent) error {
		for _, ev := range evs {
			if ev.Type == adminapi.EventUp && ev.Service.Instance == "d1" && ev.Service.PID == rec.PID {
				return nil
			}
		}
		return fmt.Errorf("no up event for d1 in %d events", len(evs))
	})
}

func TestKilledChildRepublished(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	w := lan.Watch(t, "")
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, demoNeed("d1"), demoNeed("d2"))
	old := lan.WaitServices(t, wait, "d1", "d2")

	for round := 0; round < 2; round++ {
		victim := old["d1"]
		if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		w.WaitFor(t, wait, func(evs []e2e.TimedEvent) error {
			down := false
			for _, ev := range evs {
				if ev.Service.Instance != "d1" {
					continue
				}
				if ev.Type == adminapi.EventDown && ev.Service.PID == victim.PID {
					down = true
				}
				if down && ev.Type == adminapi.EventUp && ev.Service.PID != victim.PID {
					return nil
				}
			}
			return fmt.Errorf("d1 (pid %d) not down then up again (down seen: %v)", victim.PID, down)
		})
		now := lan.WaitServices(t, wait, "d1", "d2")
		if now["d1"].PID == victim.PID {
			t.Fatalf("d1 still published with the killed pid %d", victim.PID)
		}
		if now["d2"].PID != old["d2"].PID {
			t.Errorf("d2 changed pid %d -> %d though only d1 was killed", old["d2"].PID, now["d2"].PID)
		}
		if err := e2e.Dial(now["d1"]); err != nil {
			t.Error(err)
		}
		if pid := alive(t, m)["d1"]; pid != now["d1"].PID {
			t.Errorf("master runs d1 as %d, published %d", pid, now["d1"].PID)
		}
		old = now
	}
}

func TestTwoMastersRaceOverNeeds(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	m1 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1", Size: 40})
	m2 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m2", Size: 40})
	lan.WaitConnected(t, wait, "m1", "m2")
	want := names("r", 30)
	var needs []lanwire.Need
	for _, n := range want {
		needs = append(needs, demoNeed(n))
	}
	lan.AddNeeds(t, needs...)
	recs := lan.WaitServices(t, 2*wait, want...)

	// Let any duplicate that a lost race might have started show up.
	time.Sleep(time.Second)
	p1, p2 := alive(t, m1), alive(t, m2)
	for _, inst := range want {
		pid1, on1 := p1[inst]
		pid2, on2 := p2[inst]
		rec := recs[inst]
		switch {
		case on1 && on2:
			t.Errorf("%s runs on both masters (pids %d, %d)", inst, pid1, pid2)
		case on1:
			if rec.MachineID != "m1" || rec.PID != pid1 {
				t.Errorf("%s runs on m1 as %d, published %+v", inst, pid1, rec)
			}
		case on2:
			if rec.MachineID != "m2" || rec.PID != pid2 {
				t.Errorf("%s runs on m2 as %d, published %+v", inst, pid2, rec)
			}
		default:
			t.Errorf("%s runs nowhere, published %+v", inst, rec)
		}
	}
	if len(p1)+len(p2) != len(want) {
		t.Errorf("m1 runs %d and m2 %d children, want %d in all", len(p1), len(p2), len(want))
	}
	t.Logf("m1 runs %d, m2 runs %d", len(p1), len(p2))
	for _, rec := range recs {
		if err := e2e.Dial(rec); err != nil {
			t.Error(err)
		}
	}
	// Each grant starts one child. Only a dropped link (which hands the
	// granted, unpublished needs to the other master and stops the
	// late children) may add starts, never running duplicates.
	outs := m1.Output() + m2.Output()
	starts := strings.Count(outs, "starting granted need")
	switch dropped := strings.Contains(outs, "LAN link failed") || strings.Contains(outs, "LAN link lost"); {
	case starts < len(want):
		t.Errorf("masters started %d granted needs, want %d", starts, len(want))
	case starts > len(want) && !dropped:
		t.Errorf("masters started %d granted needs, want %d, and no link dropped", starts, len(want))
	case starts > len(want):
		t.Logf("a link dropped; %d starts for %d needs", starts, len(want))
	}
}

// restartLease is the lease of the tests that restart the LAN manager.
// While it is down no pong renews a master's lease, and a master whose
// lease runs out rightly stops its LAN children (fence). A race-built LAN
// manager on a busy machine takes seconds to stop and start again, and a
// master's reconnects back off (250ms doubling, jittered), so the lease
// must outlast both with room to spare.
const restartLease = 30 * time.Second

// noFence fails the test if a master logged its fence: the tests that
// restart the LAN manager expect every master to keep its children.
func noFence(t *testing.T, masters ...*e2e.Master) {
	t.Helper()
	for _, m := range masters {
		if strings.Contains(m.Output(), "LAN lease running out") {
			t.Errorf("master on %s fenced its children while the LAN manager restarted", m.Socket)
		}
	}
}

func TestLANManagerRestartKeepsEverything(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{Lease: restartLease})
	w := lan.Watch(t, "")
	m1 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	m2 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m2"})
	lan.WaitConnected(t, wait, "m1", "m2")
	want := names("s", 6)
	for _, n := range want {
		lan.AddNeeds(t, demoNeed(n))
	}
	// A need no master can run stays pending across the restart.
	lan.AddNeeds(t, lanwire.Need{Instance: "orphan", Module: "nobody", Properties: map[string]string{"k": "v"}})
	before := lan.WaitServices(t, wait, want...)
	p1, p2 := alive(t, m1), alive(t, m2)

	lan.Restart(t)
	e2e.Eventually(t, wait, func() error {
		if n := strings.Count(lan.Output(), "master connected"); n < 2 {
			return fmt.Errorf("%d masters reconnected", n)
		}
		return nil
	})
	lan.WaitConnected(t, wait, "m1", "m2")
	// Both masters are back: their hellos re-adopted every copy, so no
	// fence is pending; a few heartbeats let any late change show.
	time.Sleep(5 * e2e.TestHeartbeat)
	after := lan.WaitServices(t, wait, want...)
	for _, inst := range want {
		b, a := before[inst], after[inst]
		if a.PID != b.PID || a.MachineID != b.MachineID || fmt.Sprint(a.Ports) != fmt.Sprint(b.Ports) {
			t.Errorf("%s changed across the restart: %+v -> %+v", inst, b, a)
		}
	}
	if q1, q2 := alive(t, m1), alive(t, m2); fmt.Sprint(q1) != fmt.Sprint(p1) || fmt.Sprint(q2) != fmt.Sprint(p2) {
		t.Errorf("masters' children changed: m1 %v -> %v, m2 %v -> %v", p1, q1, p2, q2)
	}
	needs := lan.Needs(t)
	if o := needs["orphan"]; o.State != adminapi.StatePending || o.Need.Properties["k"] != "v" {
		t.Errorf("pending need lost or changed across the restart: %+v", o)
	}
	if len(needs) != len(want)+1 {
		t.Errorf("%d needs after the restart, want %d", len(needs), len(want)+1)
	}
	for _, ev := range w.Events() {
		if ev.Type == adminapi.EventDown {
			t.Errorf("service went down around the restart: %+v", ev.Service)
		}
	}
	if n := strings.Count(m1.Output()+m2.Output(), "starting granted need"); n != len(want) {
		t.Errorf("masters started %d granted needs, want %d: children were restarted", n, len(want))
	}
	noFence(t, m1, m2)
	if strings.Contains(lan.AllOutput(), "machine fenced") {
		t.Errorf("LAN manager fenced a master that came back within its lease")
	}
}

// TestChildDiesWhileLANManagerDown: the master restarts the dead child on
// its own, on the same ports, while the LAN manager is away; after the
// reconnect its hello carries the new pid, the registry follows and
// watchers see the old pid go and the new one come, while the other
// service keeps its pid. The lease outlasts the restart, so the master
// keeps its children meanwhile.
func TestChildDiesWhileLANManagerDown(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{Lease: restartLease})
	w := lan.Watch(t, "")
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, demoNeed("d1"), demoNeed("d2"))
	before := lan.WaitServices(t, wait, "d1", "d2")
	lan.RestartAfter(t, func() {
		if err := syscall.Kill(before["d1"].PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		e2e.Eventually(t, wait, func() error {
			if pid, ok := alive(t, m)["d1"]; !ok || pid == before["d1"].PID {
				return fmt.Errorf("d1 not restarted by its master (pid %d)", pid)
			}
			return nil
		})
	})
	w.WaitFor(t, wait, func(evs []e2e.TimedEvent) error {
		if _, ok := firstUp(evs, "d1", before["d1"].PID, time.Time{}); ok {
			return nil
		}
		return fmt.Errorf("d1 not republished with a new pid")
	})
	after := lan.WaitServices(t, wait, "d1", "d2")
	if after["d2"].PID != before["d2"].PID {
		t.Errorf("d2 restarted: pid %d -> %d", before["d2"].PID, after["d2"].PID)
	}
	if after["d1"].PID == before["d1"].PID {
		t.Errorf("d1 still published with its dead pid %d", before["d1"].PID)
	}
	if fmt.Sprint(after["d1"].Ports) != fmt.Sprint(before["d1"].Ports) {
		t.Errorf("d1 moved ports in its local restart: %v -> %v", before["d1"].Ports, after["d1"].Ports)
	}
	if got := alive(t, m); len(got) != 2 || got["d1"] != after["d1"].PID || got["d2"] != after["d2"].PID {
		t.Errorf("master runs %v, published %+v", got, after)
	}
	noFence(t, m)
}

// TestLostMasterNeedsMoveAfterFence loses a master two ways and checks
// that its needs move to the other master without an instance ever having
// two live copies: both masters' children are sampled from /proc every
// 20ms throughout.
//
//   - SIGKILL: the link ends without a close frame. The master's keeper
//     stops its children at once (SIGKILL by the exit fence), and the LAN
//     manager offers the needs again exit fence + margin after the link
//     ended.
//   - SIGSTOP: the link goes silent. The keeper SIGKILLs the children
//     when the master's lease runs out, and the LAN manager offers the
//     needs again lease + margin after it last heard the master.
//     Continued, the stale master runs nothing of them.
func TestLostMasterNeedsMoveAfterFence(t *testing.T) {
	heartbeat, lease, margin := e2e.TestHeartbeat, e2e.TestLease, e2e.TestMargin
	exitFence := e2e.TestFence(lease)
	for _, tt := range []struct {
		name string
		sig  syscall.Signal
		// When, after the signal, the old children may die and the new
		// ones start.
		diedMin, diedMax, startMin time.Duration
		// What the LAN manager and the keeper log about it.
		how, keeper string
	}{
		{
			name: "SIGKILL", sig: syscall.SIGKILL,
			// The keeper's SIGTERM at once, its SIGKILL by the exit
			// fence (which ends race-built children: they sleep 1s at
			// exit), within the margin the LAN manager allows for it.
			// The LAN manager counts from the link's end, which follows
			// the kill.
			diedMax: exitFence + margin, startMin: exitFence + margin,
			how: "how=vanished", keeper: "stopping every child",
		},
		{
			name: "SIGSTOP", sig: syscall.SIGSTOP,
			// The children outlive the stop: the keeper kills them when
			// the lease (renewed by the pong to one of the last pings)
			// runs out. The LAN manager heard the master at most three
			// heartbeats before the stop, or it would have dropped the
			// link already.
			diedMin: lease / 2, diedMax: lease + margin, startMin: lease + margin - 3*heartbeat,
			how: "how=lease", keeper: "the master's LAN lease ran out",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lan := e2e.StartLAN(t, e2e.LANOpts{})
			m1 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
			t.Cleanup(func() { _ = m1.Cmd.Process.Signal(syscall.SIGCONT) })
			lan.WaitConnected(t, wait, "m1")
			want := names("k", 3)
			for _, n := range want {
				lan.AddNeeds(t, demoNeed(n))
			}
			before := lan.WaitServices(t, wait, want...)
			for _, r := range before {
				e2e.KillAtCleanup(t, r.PID)
			}
			m2 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m2"})
			lan.WaitConnected(t, wait, "m2")
			watch := e2e.WatchCopies(t, 20*time.Millisecond, map[string]string{m1.Socket: "m1", m2.Socket: "m2"})
			// The watch must know the old copies before the loss.
			e2e.Eventually(t, wait, func() error {
				for _, inst := range want {
					if ps := watch.Procs("m1", inst); len(ps) != 1 || ps[0].PID != before[inst].PID {
						return fmt.Errorf("watch sees %+v for %s on m1, want pid %d", ps, inst, before[inst].PID)
					}
				}
				return nil
			})

			lost := time.Now()
			if err := m1.Cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			e2e.Eventually(t, wait, func() error {
				got := lan.Services(t)
				for _, inst := range want {
					if r, ok := got[inst]; !ok || r.MachineID != "m2" {
						return fmt.Errorf("%s not yet on m2: %+v", inst, r)
					}
				}
				return nil
			})
			moved := time.Since(lost)
			// The new copies are published, so running: let the watch
			// see them, and see the old ones gone.
			e2e.Eventually(t, wait, func() error {
				for _, inst := range want {
					if len(watch.Procs("m2", inst)) == 0 {
						return fmt.Errorf("watch has not seen %s on m2", inst)
					}
					if old := watch.Procs("m1", inst); time.Since(old[0].Last) < 100*time.Millisecond {
						return fmt.Errorf("%s (pid %d) still alive on m1", inst, old[0].PID)
					}
				}
				return nil
			})

			var died, started []time.Duration
			for _, inst := range want {
				old := watch.Procs("m1", inst)[0]
				now := watch.Procs("m2", inst)[0]
				d, s := old.Last.Sub(lost), now.First.Sub(lost)
				died, started = append(died, d), append(started, s)
				// Last seen is a sample before the death: with no lower
				// bound (diedMin 0) a child that died at once may last
				// have been seen a sampling gap before the signal.
				if (tt.diedMin > 0 && d < tt.diedMin) || d > tt.diedMax {
					t.Errorf("%s: m1's child (pid %d) last seen alive %v after %s, want within [%v, %v]",
						inst, old.PID, d.Round(time.Millisecond), tt.name, tt.diedMin, tt.diedMax)
				}
				if s < tt.startMin {
					t.Errorf("%s: m2's child (pid %d) first seen %v after %s, before the fence (%v)",
						inst, now.PID, s.Round(time.Millisecond), tt.name, tt.startMin)
				}
			}
			if p := alive(t, m2); len(p) != len(want) {
				t.Errorf("m2 runs %v, want %v", p, want)
			}
			if ms := lan.Machines(t); ms["m1"].Connected {
				t.Errorf("m1 still connected: %+v", ms["m1"])
			}
			out := lan.Output()
			if !strings.Contains(out, "its copies are its own until its fence") || !strings.Contains(out, tt.how) ||
				!strings.Contains(out, "machine fenced: its copies end") {
				t.Errorf("LAN manager did not log m1's loss (%s) and fence", tt.how)
			}
			// The keeper shares m1's output, and outlives it.
			if !strings.Contains(m1.Output(), tt.keeper) {
				t.Errorf("m1's keeper did not log %q", tt.keeper)
			}

			if tt.sig == syscall.SIGSTOP {
				if err := m1.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
				lan.WaitConnected(t, wait, "m1")
				e2e.Eventually(t, wait, func() error {
					if p := alive(t, m1); len(p) != 0 {
						return fmt.Errorf("m1 back and still runs %v", p)
					}
					for _, r := range before {
						if !processGone(r.PID) {
							return fmt.Errorf("m1's old child %s pid %d still exists", r.Instance, r.PID)
						}
					}
					return nil
				})
				// Back on the link, m1 may be offered needs: a few
				// heartbeats show whether it takes any of the moved ones.
				time.Sleep(5 * heartbeat)
				after := lan.WaitServices(t, wait, want...)
				for _, inst := range want {
					if after[inst].MachineID != "m2" || after[inst].PID != watch.Procs("m2", inst)[0].PID {
						t.Errorf("%s moved again: %+v", inst, after[inst])
					}
				}
			}
			watch.Stop()
			for _, o := range watch.Overlaps() {
				t.Errorf("two live copies: %s", o)
			}
			for _, p := range watch.Procs("m1", "") {
				if p.First.After(lost) {
					t.Errorf("m1 started %s (pid %d) after %s", p.Instance, p.PID, tt.name)
				}
			}
			for _, inst := range want {
				if ps := watch.Procs("m2", inst); len(ps) != 1 {
					t.Errorf("m2 ran %s %d times, want once: %+v", inst, len(ps), ps)
				}
			}
			n, gap := watch.Samples()
			t.Logf("%s: m1's children last seen alive %v after it, m2's first seen %v after it; published on m2 after %v "+
				"(heartbeat %v, lease %v, exit fence %v, margin %v; %d samples, longest gap %v)",
				tt.name, roundAll(died), roundAll(started), moved.Round(time.Millisecond),
				heartbeat, lease, exitFence, margin, n, gap.Round(time.Millisecond))
		})
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func TestNeedRemovedStopsChild(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, demoNeed("d1"), demoNeed("d2"))
	recs := lan.WaitServices(t, wait, "d1", "d2")
	if out := lan.MustCtl(t, "needs", "rm", "d1"); !strings.Contains(out, "need d1 removed") {
		t.Errorf("needs rm output %q", out)
	}
	lan.WaitServices(t, wait, "d2")
	e2e.Eventually(t, wait, func() error {
		if pid, ok := alive(t, m)["d1"]; ok {
			return fmt.Errorf("d1 still runs as %d", pid)
		}
		if !processGone(recs["d1"].PID) {
			return fmt.Errorf("pid %d still exists", recs["d1"].PID)
		}
		return nil
	})
	if _, ok := lan.Needs(t)["d1"]; ok {
		t.Errorf("need d1 still listed")
	}
	if got := alive(t, m); len(got) != 1 || got["d2"] != recs["d2"].PID {
		t.Errorf("master runs %v, want only d2 as %d", got, recs["d2"].PID)
	}
	if _, errOut, err := lan.Ctl(t, "needs", "rm", "d1"); err == nil || !strings.Contains(errOut, "not found") {
		t.Errorf("removing an unknown need: err %v, stderr %q", err, errOut)
	}
}

func TestNeedsFileAtStart(t *testing.T) {
	dir := e2e.ShortDir(t)
	file := e2e.WriteFile(t, dir, "needs.json", `{"needs":[
		{"instance":"f1","module":"demo","protocols":["tcp","http"],"properties":{"from":"file"}},
		{"instance":"f2","module":"demo","protocols":["tcp"]}]}`)
	lan := e2e.StartLAN(t, e2e.LANOpts{Extra: []string{"-needs", file}})
	e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	recs := lan.WaitServices(t, wait, "f1", "f2")
	if recs["f1"].Properties["from"] != "file" || len(recs["f2"].Ports) != 1 {
		t.Errorf("records %+v", recs)
	}
	for _, r := range recs {
		if err := e2e.Dial(r); err != nil {
			t.Error(err)
		}
	}
	for inst, n := range lan.Needs(t) {
		if n.Origin != "file:"+file {
			t.Errorf("need %s origin %q, want file:%s", inst, n.Origin, file)
		}
	}
}

func TestPlacement(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	m1 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, lanwire.Need{Instance: "o1", Module: "other", Protocols: []string{"tcp"}})
	lan.MustCtl(t, "needs", "add", "-module", "demo", "-protocols", "tcp", "-machine", "m2", "pinned1")
	lan.MustCtl(t, "needs", "add", "-module", "demo", "-protocols", "tcp", "-machine", "m2", "pinned2")
	// m1 is offered these needs and must pass on all of them.
	time.Sleep(2 * time.Second)
	if got := alive(t, m1); len(got) != 0 {
		t.Fatalf("m1 runs %v: it lacks module other and is not m2", got)
	}
	for inst, n := range lan.Needs(t) {
		if n.State != adminapi.StatePending {
			t.Errorf("need %s is %s, want pending", inst, n.State)
		}
	}

	m2 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m2", Modules: e2e.DemoModule("demo") + "," + e2e.DemoModule("other")})
	recs := lan.WaitServices(t, wait, "o1", "pinned1", "pinned2")
	for inst, r := range recs {
		if r.MachineID != "m2" {
			t.Errorf("%s placed on %s, want m2", inst, r.MachineID)
		}
	}
	if got := alive(t, m2); len(got) != 3 {
		t.Errorf("m2 runs %v, want 3 children", got)
	}
	// An unpinned demo need may go to either; one for "other" only to m2.
	lan.AddNeeds(t, lanwire.Need{Instance: "o2", Module: "other", Protocols: []string{"tcp"}})
	if r := lan.WaitServices(t, wait, "o1", "o2", "pinned1", "pinned2")["o2"]; r.MachineID != "m2" {
		t.Errorf("o2 placed on %s, want m2", r.MachineID)
	}
	if got := alive(t, m1); len(got) != 0 {
		t.Errorf("m1 runs %v", got)
	}
}

func TestPortCheckFailureRetried(t *testing.T) {
	self, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	// A child that never listens, with readiness none so the master
	// reports it spawned at once: only the LAN manager's port check can
	// catch it.
	deaf := fmt.Sprintf(`"deaf":{"command":%q,"env":{"ALLEX_TEST_HELPER":"never"},"protocols":["tcp"],"readiness":"none","stoptimeout":"2s"}`, self)
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1", Modules: deaf})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, lanwire.Need{Instance: "x1", Module: "deaf", Protocols: []string{"tcp"}})

	var st adminapi.NeedStatus
	e2e.Eventually(t, 2*wait, func() error {
		// Each attempt allocates one tcp port; a rejected attempt that
		// kept its port would show as more than one in use.
		if n := m.PortsInUse(t); n > 1 {
			t.Fatalf("%d ports in use with one deaf child at a time", n)
		}
		st = lan.Needs(t)["x1"]
		if st.Attempts < 3 {
			return fmt.Errorf("x1 attempts %d (%s, %q)", st.Attempts, st.State, st.LastError)
		}
		return nil
	})
	if st.LastError == "" {
		t.Errorf("need x1 has no last error: %+v", st)
	}
	t.Logf("x1 after %d attempts: %s", st.Attempts, st.LastError)
	if len(lan.Services(t)) != 0 {
		t.Errorf("a service that failed its port check is published")
	}
	if n := strings.Count(m.Output(), "LAN manager rejected the service; stopping it"); n < 1 {
		t.Errorf("master did not stop a rejected child")
	}
	// Stop the retries; afterwards nothing may stay running or allocated.
	lan.MustCtl(t, "needs", "rm", "x1")
	e2e.Eventually(t, wait, func() error {
		if got := alive(t, m); len(got) != 0 {
			return fmt.Errorf("master still runs %v", got)
		}
		if n := m.PortsInUse(t); n != 0 {
			return fmt.Errorf("%d ports still allocated", n)
		}
		return nil
	})
}

func TestCtlAgainstLANManager(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	watch := e2e.Start(t, lan.Dir, e2e.Bins.Ctl, "-lan", lan.URL, "-token", lan.Token, "services", "-w")
	jwatch := e2e.Start(t, lan.Dir, e2e.Bins.Ctl, "-lan", lan.URL, "-token", lan.Token, "-o", "json", "services", "-w", "-module", "demo")

	lan.MustCtl(t, "needs", "add", "-module", "demo", "-protocols", "tcp,http", "c1")
	lan.MustCtl(t, "needs", "add", "-module", "nobody", "c2")
	rec := lan.WaitServices(t, wait, "c1")["c1"]

	table := lan.MustCtl(t, "services")
	lines := e2e.Lines(table)
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "INSTANCE") ||
		!strings.Contains(lines[1], "c1") || !strings.Contains(lines[1], fmt.Sprint(rec.PID)) ||
		!strings.Contains(lines[1], fmt.Sprintf("tcp=%d", rec.Ports["tcp"])) {
		t.Errorf("services table:\n%s", table)
	}
	var recs []lanwire.ServiceRecord
	if err := json.Unmarshal([]byte(lan.MustCtl(t, "-o", "json", "services")), &recs); err != nil || len(recs) != 1 || recs[0].PID != rec.PID {
		t.Errorf("services -o json: %v %+v", err, recs)
	}

	table = lan.MustCtl(t, "needs", "ls")
	lines = e2e.Lines(table)
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "INSTANCE") ||
		!strings.Contains(lines[1], "c1") || !strings.Contains(lines[1], "satisfied") || !strings.Contains(lines[1], "m1") ||
		!strings.Contains(lines[2], "c2") || !strings.Contains(lines[2], "pending") {
		t.Errorf("needs ls table:\n%s", table)
	}
	var needs []adminapi.NeedStatus
	if err := json.Unmarshal([]byte(lan.MustCtl(t, "-o", "json", "needs", "ls")), &needs); err != nil || len(needs) != 2 ||
		needs[0].Need.Instance != "c1" || needs[0].State != adminapi.StateSatisfied || needs[1].State != adminapi.StatePending {
		t.Errorf("needs ls -o json: %v %+v", err, needs)
	}

	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	watch.WaitOutput("down c1", wait)
	e2e.Eventually(t, wait, func() error {
		ups := 0
		for _, l := range e2e.Lines(watch.Output()) {
			if strings.Contains(l, " up ") && strings.Contains(l, " c1 ") {
				ups++
			}
		}
		if ups < 2 {
			return fmt.Errorf("%d up lines for c1:\n%s", ups, watch.Output())
		}
		return nil
	})
	e2e.Eventually(t, wait, func() error {
		var types []string
		for _, l := range e2e.Lines(jwatch.Output()) {
			var ev adminapi.ServiceEvent
			if err := json.Unmarshal([]byte(l), &ev); err != nil {
				return fmt.Errorf("watch -o json line %q: %w", l, err)
			}
			types = append(types, ev.Type)
		}
		if strings.Join(types, ",") != "up,down,up" {
			return fmt.Errorf("json watch events %v, want up,down,up", types)
		}
		return nil
	})

	if _, errOut, err := lan.Ctl(t, "needs", "add", "-module", "demo", "c1"); err == nil || !strings.Contains(errOut, "c1") {
		t.Errorf("adding a duplicate need: err %v, stderr %q", err, errOut)
	}
	if _, errOut, err := e2e.Ctl(t, "unused", "-lan", lan.URL, "-token", e2e.PinnedToken(t, lan.Data, "wrong"), "services"); err == nil || !strings.Contains(strings.ToLower(errOut), "unauthorized") {
		t.Errorf("wrong token: err %v, stderr %q", err, errOut)
	}
}

func TestDevMode(t *testing.T) {
	dir := e2e.ShortDir(t)
	p := e2e.Start(t, dir, e2e.Bins.Master, "-dev", "-dev-exit", "-dev-lan-addr", "127.0.0.1:0",
		"-socket", filepath.Join(dir, "m.sock"), "-dev-kills", "2", "-dev-interval", "200ms")
	if err := p.Wait(2 * wait); err != nil {
		t.Fatalf("allexmaster -dev: %v\n%s", err, p.Output())
	}
	out := p.Output()
	for _, want := range []string{"allex dev: added 3 demo needs", "all 3 demo services published"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := strings.Count(out, "allex dev: kill -9"); n != 2 {
		t.Errorf("%d kills, want 2", n)
	}
	if n := strings.Count(out, "allex dev: re-satisfied"); n != 2 {
		t.Errorf("%d re-satisfied, want 2", n)
	}
	if n := strings.Count(out, "allex dev: published"); n != 5 {
		t.Errorf("%d published lines, want 3 + 2", n)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// rawLink is a hand-driven master link for feeding the LAN manager frames
// a real master never sends.
type rawLink struct {
	t    *testing.T
	conn *websocket.Conn
}

// dialRaw links with token, and over TLS with a certificate for machine
// (none when machine is "").
func dialRaw(t *testing.T, lan *e2e.LAN, machine, token string) (*rawLink, *http.Response, error) {
	url := fmt.Sprintf("ws://127.0.0.1:%d%s", lan.Port, lanwire.Path)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	if !lan.Insecure {
		url = "wss" + strings.TrimPrefix(url, "ws")
		d.TLSClientConfig = lan.ClientTLS()
		if machine != "" {
			d.TLSClientConfig = lan.MasterTLS(t, machine)
		}
	}
	conn, resp, err := d.Dial(url, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		return nil, resp, err
	}
	r := &rawLink{t: t, conn: conn}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		// Keep-alive: the LAN manager drops links silent for 3 heartbeats.
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)) != nil {
					return
				}
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done; conn.Close() })
	return r, resp, nil
}

func (r *rawLink) send(mt int, b []byte) {
	r.t.Helper()
	if err := r.conn.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		r.t.Fatal(err)
	}
	if err := r.conn.WriteMessage(mt, b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawLink) sendFrame(typ string, payload any) {
	r.t.Helper()
	b, err := lanwire.Encode(typ, payload)
	if err != nil {
		r.t.Fatal(err)
	}
	r.send(websocket.TextMessage, b)
}

// next reads frames until one of type typ arrives.
func (r *rawLink) next(typ string) any {
	r.t.Helper()
	return r.nextOf(typ)
}

// nextOf reads frames until one of the types arrives.
func (r *rawLink) nextOf(types ...string) any {
	r.t.Helper()
	if err := r.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		r.t.Fatal(err)
	}
	for {
		_, b, err := r.conn.ReadMessage()
		if err != nil {
			r.t.Fatalf("waiting for a %v frame: %v", types, err)
		}
		got, p, err := lanwire.Decode(b)
		if err != nil {
			r.t.Fatalf("LAN manager sent a bad frame %q: %v", b, err)
		}
		if slices.Contains(types, got) {
			return p
		}
	}
}

func TestMalformedFramesRefused(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{Heartbeat: time.Second, Lease: 5 * time.Second})
	w := lan.Watch(t, "")
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, demoNeed("d1"), lanwire.Need{Instance: "p1", Module: "nobody"})
	before := lan.WaitServices(t, wait, "d1")

	if _, resp, err := dialRaw(t, lan, "", "wrong"); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("link with a wrong token: err %v, response %+v", err, resp)
	}

	// A hello without an identity (which a master keeps in its state
	// dir) is a bad first frame: the link is closed.
	anon, _, err := dialRaw(t, lan, "anon", lan.Bearer())
	if err != nil {
		t.Fatal(err)
	}
	anon.sendFrame(lanwire.TypeHello, &lanwire.Hello{MachineID: "anon", Address: "127.0.0.1", Modules: []string{"nobody"}})
	if err := anon.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	for {
		_, b, err := anon.conn.ReadMessage()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("LAN manager kept a link whose hello has no identity")
		}
		if err != nil {
			break
		}
		if typ, _, _ := lanwire.Decode(b); typ == lanwire.TypeWelcome {
			t.Fatal("LAN manager welcomed a hello without an identity")
		}
	}
	if _, ok := lan.Machines(t)["anon"]; ok {
		t.Error("LAN manager lists the machine of a hello without an identity")
	}

	r, _, err := dialRaw(t, lan, "raw", lan.Bearer())
	if err != nil {
		t.Fatal(err)
	}
	r.sendFrame(lanwire.TypeHello, &lanwire.Hello{MachineID: "raw", Identity: "raw-identity-0123456789", Address: "127.0.0.1", Modules: []string{"nobody"}})
	r.next(lanwire.TypeWelcome)
	lan.WaitConnected(t, wait, "raw")
	epoch := before["d1"].Epoch

	bad := []struct {
		name string
		mt   int
		data string
	}{
		{"not json", websocket.TextMessage, `{"type":"claim",`},
		{"binary", websocket.BinaryMessage, `{"type":"claim","data":{"instance":"p1"}}`},
		{"unknown type", websocket.TextMessage, `{"type":"explode","data":{}}`},
		{"unknown field", websocket.TextMessage, `{"type":"claim","data":{"instance":"p1","force":true}}`},
		{"repeated field", websocket.TextMessage, `{"type":"claim","data":{"instance":"p1","instance":"d1"}}`},
		{"trailing data", websocket.TextMessage, `{"type":"claim","data":{"instance":"p1"}} {}`},
		{"missing data", websocket.TextMessage, `{"type":"claim"}`},
		{"bad instance", websocket.TextMessage, `{"type":"claim","data":{"instance":"../p1"}}`},
		{"bad port", websocket.TextMessage, fmt.Sprintf(`{"type":"spawned","data":{"instance":"d1","epoch":%d,"pid":1,"ports":{"tcp":0},"startedat":"2026-01-01T00:00:00Z"}}`, epoch)},
		{"no epoch", websocket.TextMessage, `{"type":"down","data":{"instance":"d1","pid":1}}`},
		{"second hello", websocket.TextMessage, `{"type":"hello","data":{"machine":"m1","identity":"raw-identity-0123456789","address":"127.0.0.1","modules":["demo"],"capacity":{"maxprocesses":0,"running":0}}}`},
		{"frame of the LAN manager", websocket.TextMessage, fmt.Sprintf(`{"type":"stop","data":{"instance":"d1","epoch":%d}}`, epoch)},
	}
	for _, b := range bad {
		r.send(b.mt, []byte(b.data))
		if e, ok := r.next(lanwire.TypeError).(*lanwire.Error); !ok || e.Message == "" {
			t.Errorf("%s: error frame %+v", b.name, e)
		}
	}
	// Well-formed reports about m1's copy, under its epoch or another,
	// are not this link's to make: each is refused, the spawned one is
	// also told to stop, and nothing changes.
	for _, e := range []uint64{epoch, epoch + 1000} {
		r.sendFrame(lanwire.TypeDown, &lanwire.Down{Instance: "d1", Epoch: e, PID: before["d1"].PID, Reason: "forged"})
		r.sendFrame(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: "d1", Epoch: e, Error: "forged"})
		r.sendFrame(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "d1", Epoch: e, PID: 1, Ports: lanwire.Ports{"tcp": 1}, StartedAt: time.Now()})
		refused := map[string]bool{}
		stopped := false
		for len(refused) < 3 || !stopped {
			switch f := r.nextOf(lanwire.TypeError, lanwire.TypeStop).(type) {
			case *lanwire.Error:
				refused[f.Ref] = true
			case *lanwire.Stop:
				stopped = f.Instance == "d1" && f.Epoch == e
			}
		}
	}
	r.sendFrame(lanwire.TypeClaim, &lanwire.Claim{Instance: "d1"})
	r.next(lanwire.TypeDeny)

	after := lan.WaitServices(t, wait, "d1")
	if fmt.Sprint(after["d1"]) != fmt.Sprint(before["d1"]) {
		t.Errorf("d1 changed: %+v -> %+v", before["d1"], after["d1"])
	}
	needs := lan.Needs(t)
	if len(needs) != 2 || needs["d1"].State != adminapi.StateSatisfied || needs["p1"].State != adminapi.StatePending {
		t.Errorf("needs changed: %+v", needs)
	}
	if ms := lan.Machines(t); !ms["m1"].Connected || !ms["raw"].Connected {
		t.Errorf("links dropped: %+v", ms)
	}
	if pid := alive(t, m)["d1"]; pid != before["d1"].PID {
		t.Errorf("m1 runs d1 as %d, want %d", pid, before["d1"].PID)
	}
	for _, ev := range w.Events() {
		if ev.Type == adminapi.EventDown {
			t.Errorf("service went down: %+v", ev.Service)
		}
	}
}

// TestCapacityReportsCatchUp: a master reports capacity at most every
// 100 ms unless its fullness changes, the latest state last, so after a
// burst of starts and after stops the LAN manager's view of the machine
// still ends up exact.
func TestCapacityReportsCatchUp(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	var needs []lanwire.Need
	var names []string
	for i := range 12 {
		name := fmt.Sprintf("c%02d", i)
		needs, names = append(needs, demoNeed(name)), append(names, name)
	}
	lan.AddNeeds(t, needs...)
	lan.WaitServices(t, wait, names...)
	running := func(want int) {
		t.Helper()
		e2e.Eventually(t, wait, func() error {
			if c := lan.Machines(t)["m1"].Capacity; c.Running != want {
				return fmt.Errorf("LAN manager sees %d running on m1, want %d", c.Running, want)
			}
			return nil
		})
	}
	running(12)
	for _, name := range names[:5] {
		lan.MustCtl(t, "needs", "rm", name)
	}
	running(7)
}
