package lanmanager_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
)

// notOffered drains m's frames for d and fails if a needs list offers inst
// or any frame other than a needs list arrives.
func (m *master) notOffered(inst string, d time.Duration) {
	m.t.Helper()
	m.onlyNeeds(d, func(offered []string) {
		if slices.Contains(offered, inst) {
			m.t.Fatalf("%s offered to another master while its own restarts it", inst)
		}
	})
}

func grantedTo(e *env, inst string) string {
	for _, n := range e.srv.Needs() {
		if n.Need.Instance == inst && n.State == adminapi.StateGranted {
			return n.Machine
		}
	}
	return ""
}

// TestDownRestarting: a master restarting a child itself keeps the need
// granted (no other master is offered it, a claim is denied), the record
// goes at once, and the restarted child is published again.
func TestDownRestarting(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"))
	m1 := e.connect(t, hello("m1", "web"))
	rec := m1.publish("w1")
	m2 := e.connect(t, hello("m2", "web"))

	m1.send(lanwire.TypeDown, &lanwire.Down{Instance: "w1", PID: rec.PID, Signal: "SIGKILL", Reason: "killed by SIGKILL", Restarting: true})
	eventually(t, "record removed, need kept for m1", func() bool {
		return len(e.srv.Services(lanmanagerFilter())) == 0 && grantedTo(e, "w1") == "m1"
	})
	m2.notOffered("w1", 300*time.Millisecond)
	m2.send(lanwire.TypeClaim, &lanwire.Claim{Instance: "w1"})
	if d := m2.expect(lanwire.TypeDeny).p.(*lanwire.Deny); d.Instance != "w1" {
		t.Fatalf("deny for %q", d.Instance)
	}
	// Same ports, new pid: published again without a claim.
	m1.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", PID: rec.PID + 1, Ports: rec.Ports, StartedAt: time.Now()})
	again := m1.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service
	if again.PID != rec.PID+1 || again.Ports["tcp"] != rec.Ports["tcp"] || again.MachineID != "m1" {
		t.Fatalf("republished %+v, was %+v", again, rec)
	}
}

// TestDownRestartingDuringCheck: a child that dies while its spawned report
// is being checked and is restarted keeps the grant; the stale check must
// not stop the new run.
func TestDownRestartingDuringCheck(t *testing.T) {
	cfg := testConfig()
	cfg.PortCheckAttempts = 5
	cfg.PortCheckInterval = 100 * time.Millisecond
	e := start(t, cfg)
	e.addNeeds(tcpNeed("w1", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.claim("w1")
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", PID: 10, Ports: lanwire.Ports{"tcp": closedPort(t)}})
	m.send(lanwire.TypeDown, &lanwire.Down{Instance: "w1", PID: 10, ExitCode: 1, Restarting: true})
	// The stale check gives up after 5 attempts; nothing may come of it.
	m.quiet(800 * time.Millisecond)
	if got := grantedTo(e, "w1"); got != "m1" {
		t.Fatalf("need granted to %q, want m1", got)
	}
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", PID: 11, Ports: lanwire.Ports{"tcp": listener(t)}})
	if rec := m.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service; rec.PID != 11 {
		t.Fatalf("published %+v", rec)
	}
}

// TestDownRestartingCrashLoop: a service that keeps going down is not
// kept for its master past the crash-loop limit: the master is told to
// stop, and the need waits out its backoff for any master.
func TestDownRestartingCrashLoop(t *testing.T) {
	cfg := testConfig()
	cfg.CrashLoopLimit = 1
	cfg.RetryBackoffInitial = 300 * time.Millisecond
	cfg.RetryBackoffMax = 300 * time.Millisecond
	e := start(t, cfg)
	e.addNeeds(tcpNeed("w1", "web"))
	m := e.connect(t, hello("m1", "web"))
	rec := m.publish("w1")
	m.send(lanwire.TypeDown, &lanwire.Down{Instance: "w1", PID: rec.PID, ExitCode: 1, Restarting: true})
	eventually(t, "need kept for m1", func() bool { return grantedTo(e, "w1") == "m1" })
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", PID: 2, Ports: rec.Ports})
	m.expect(lanwire.TypeApproved)
	m.send(lanwire.TypeDown, &lanwire.Down{Instance: "w1", PID: 2, ExitCode: 1, Restarting: true})
	stop := m.expect(lanwire.TypeStop).p.(*lanwire.Stop)
	if stop.Instance != "w1" || !strings.Contains(stop.Reason, "crash loop") {
		t.Fatalf("stop = %+v", stop)
	}
	if st, att, _ := needState(e, "w1"); st != adminapi.StatePending || att != 1 {
		t.Fatalf("state %q attempts %d, want pending in backoff", st, att)
	}
	m.expectNeeds("w1")
}
