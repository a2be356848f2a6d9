package lanmanager_test

import (
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
)

// TestDownRestarting: a master restarting a child itself keeps the copy
// under the same epoch: the record goes at once, no other master is
// offered the need (its claim is denied), and the restarted child is
// published again without a claim. The crash-loop limit on such restarts
// is lanstate's TestDownRestarting.
func TestDownRestarting(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"))
	m1 := e.connect(t, hello("m1", "web"))
	rec := m1.publish("w1")
	m2 := e.connect(t, hello("m2", "web"))
	m2.expectNeeds()

	m1.send(lanwire.TypeDown, &lanwire.Down{Instance: "w1", Epoch: rec.Epoch, PID: rec.PID, Signal: "SIGKILL", Reason: "killed by SIGKILL", Restarting: true})
	eventually(t, "record removed, copy kept for m1", func() bool {
		n := e.need("w1")
		return len(e.services()) == 0 && n.State == adminapi.StateGranted && n.Machine == "m1" && n.Epoch == rec.Epoch
	})
	// m2's link is ordered: a needs list offering w1 would come first.
	m2.send(lanwire.TypeClaim, &lanwire.Claim{Instance: "w1"})
	if d := m2.expectNotOffered(lanwire.TypeDeny, "w1").p.(*lanwire.Deny); !strings.Contains(d.Reason, "already granted") {
		t.Fatalf("deny %+v", d)
	}
	// Same ports, new pid: published again without a claim.
	m1.spawned("w1", rec.PID+1, rec.Ports)
	again := m1.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service
	if again.PID != rec.PID+1 || again.Epoch != rec.Epoch || again.Ports["tcp"] != rec.Ports["tcp"] || again.MachineID != "m1" {
		t.Fatalf("republished %+v, was %+v", again, rec)
	}
}

// TestDownRestartingDuringCheck: a child that dies while its spawned report
// is being checked and is restarted keeps the grant; the result of the
// stale check, which comes back from its own goroutine later, must not
// touch the new run.
func TestDownRestartingDuringCheck(t *testing.T) {
	cfg := testConfig()
	cfg.PortCheckAttempts = 5
	cfg.PortCheckInterval = 100 * time.Millisecond
	e := start(t, cfg)
	e.addNeeds(tcpNeed("w1", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.claim("w1")
	m.spawned("w1", 10, lanwire.Ports{"tcp": closedPort(t)})
	m.down("w1", true)
	// The stale check gives up after 5 attempts; nothing may come of it.
	m.quiet(800 * time.Millisecond)
	if n := e.need("w1"); n.State != adminapi.StateGranted || n.Machine != "m1" || n.Attempts != 0 {
		t.Fatalf("need = %+v, want granted to m1", n)
	}
	m.spawned("w1", 11, lanwire.Ports{"tcp": listener(t)})
	if rec := m.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service; rec.PID != 11 {
		t.Fatalf("published %+v", rec)
	}
}
