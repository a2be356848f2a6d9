package lanstate

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanwire"
)

// placer says hello as a master of the placement protocol with the given
// capacity (0: unlimited).
func (x *h) placer(sid SessionID, machine string, maxProcs int) Effects {
	x.t.Helper()
	identity := fmt.Sprintf("%-16s", machine+"-identity")
	identity = strings.ReplaceAll(identity, " ", "x")
	x.st.Hello(x.now, sid, &lanwire.Hello{MachineID: machine, Identity: identity, Address: "10.0.0.1", Modules: []string{"web"},
		Capacity: lanwire.Capacity{MaxProcesses: maxProcs}, Protocol: lanwire.Placement})
	return x.step()
}

// grants returns the instances granted in fx, by session.
func grants(fx Effects) map[SessionID][]string {
	out := map[SessionID][]string{}
	for _, s := range fx.Sends {
		if s.Type == lanwire.TypeGrant {
			out[s.Session] = append(out[s.Session], s.Payload.(*lanwire.Grant).Need.Instance)
		}
	}
	return out
}

// addStep adds needs and returns the effects of that batch.
func (x *h) addStep(names ...string) Effects {
	x.t.Helper()
	var needs []lanwire.Need
	for _, n := range names {
		needs = append(needs, lanwire.Need{Instance: n, Module: "web", Protocols: []string{"tcp"}})
	}
	if err := x.st.AddNeeds(x.now, needs, "api"); err != nil {
		x.t.Fatal(err)
	}
	return x.step()
}

// TestPlacementSpreads: 10,000 needs on 100 equal masters are placed in
// one batch, each once, each grant stored with it, and evenly: no master
// holds more than 2x the mean (here, exactly the mean).
func TestPlacementSpreads(t *testing.T) {
	x := newH(t)
	for k := range 100 {
		x.placer(SessionID(fmt.Sprint("s", k)), fmt.Sprint("m", k), 0)
	}
	var names []string
	for k := range 10000 {
		names = append(names, fmt.Sprintf("n%05d", k))
	}
	fx := x.addStep(names...)
	seen := map[string]bool{}
	for sid, got := range grants(fx) {
		if len(got) != 100 {
			t.Errorf("%s got %d needs, want 100", sid, len(got))
		}
		for _, n := range got {
			if seen[n] {
				t.Fatalf("%s granted twice", n)
			}
			seen[n] = true
			if rec := fx.Store.Instances[n]; rec == nil || rec.Copy == nil {
				t.Fatalf("grant of %s not stored in its batch", n)
			}
		}
	}
	if len(seen) != 10000 {
		t.Fatalf("%d needs granted, want 10000", len(seen))
	}
	none(t, fx, "s0", lanwire.TypeNeeds)
	// Nothing pending: a later batch grants nothing more.
	if g := grants(x.at(time.Second)); len(g) != 0 {
		t.Fatalf("second pass granted %v", g)
	}
}

// TestPlacementLeastLoaded: a new master gets the next needs until it
// holds as many as the others.
func TestPlacementLeastLoaded(t *testing.T) {
	x := newH(t)
	x.placer("s1", "m1", 0)
	x.addStep("a", "b", "c")
	x.placer("s2", "m2", 0)
	g := grants(x.addStep("d", "e", "f", "g"))
	if len(g["s2"]) != 3 || len(g["s1"]) != 1 {
		t.Fatalf("grants = %v, want 3 to s2 then 1 to s1", g)
	}
}

// TestPlacementDecline: a declined grant is not a failure; the need goes
// at once to another master, and back to the one that declined only
// after the hold.
func TestPlacementDecline(t *testing.T) {
	x := newH(t)
	x.placer("s1", "m1", 0)
	g := sent[*lanwire.Grant](t, x.addStep("w1"), "s1", lanwire.TypeGrant)
	x.placer("s2", "m2", 0)
	// m2 is less loaded, but w1 stays m1's copy until m1 declines it.
	none(t, x.at(0), "s2", lanwire.TypeGrant)
	fx := x.frame("s1", lanwire.TypeDecline, &lanwire.Decline{Instance: "w1", Epoch: g.Epoch, Reason: "full"})
	g2 := sent[*lanwire.Grant](t, fx, "s2", lanwire.TypeGrant)
	if g2.Epoch <= g.Epoch {
		t.Fatalf("new epoch %d, want > %d", g2.Epoch, g.Epoch)
	}
	st, _ := x.st.NeedStatus("w1")
	if st.Attempts != 0 || !strings.Contains(st.LastError, "declined by m1: full") {
		t.Fatalf("status after decline = %+v", st)
	}
	// m2 declines too: nobody may take it until a hold ends.
	fx = x.frame("s2", lanwire.TypeDecline, &lanwire.Decline{Instance: "w1", Epoch: g2.Epoch, Reason: "draining"})
	if g := grants(fx); len(g) != 0 {
		t.Fatalf("granted %v while both masters hold a decline", g)
	}
	if next, ok := x.st.Next(); !ok || !next.Equal(t0.Add(DefaultDeclineHold)) {
		t.Fatalf("Next = %v %v, want the end of m1's hold", next, ok)
	}
	sent[*lanwire.Grant](t, x.at(DefaultDeclineHold), "s1", lanwire.TypeGrant)
	// A stale or unknown decline is refused.
	fx = x.frame("s2", lanwire.TypeDecline, &lanwire.Decline{Instance: "w1", Epoch: g2.Epoch, Reason: "late"})
	if e := sent[*lanwire.Error](t, fx, "s2", lanwire.TypeError); !strings.Contains(e.Message, "not a copy of this master") {
		t.Fatalf("error = %q", e.Message)
	}
}

// TestPlacementDeclineAfterSpawnedRefused: a copy reported spawned cannot
// be declined; it is reported down.
func TestPlacementDeclineAfterSpawnedRefused(t *testing.T) {
	x := newH(t)
	x.placer("s1", "m1", 0)
	g := sent[*lanwire.Grant](t, x.addStep("w1"), "s1", lanwire.TypeGrant)
	x.frame("s1", lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", Epoch: g.Epoch, PID: 9, Ports: lanwire.Ports{"tcp": 5000}})
	fx := x.frame("s1", lanwire.TypeDecline, &lanwire.Decline{Instance: "w1", Epoch: g.Epoch, Reason: "x"})
	sent[*lanwire.Error](t, fx, "s1", lanwire.TypeError)
	x.wantState("w1", "granted", "m1")
}

// TestPlacementCapacity: a full master is given nothing more; the need
// waits, first in line, until a copy ends.
func TestPlacementCapacity(t *testing.T) {
	x := newH(t)
	x.placer("s1", "m1", 2)
	g := grants(x.addStep("c", "b", "a"))
	if strings.Join(g["s1"], ",") != "c,b" {
		t.Fatalf("grants = %v, want c,b in arrival order", g)
	}
	// Added later but sorted first: it waits behind a.
	x.addStep("0-late")
	e := x.st.insts["c"].rec.Copy.Epoch
	fx := x.frame("s1", lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: "c", Epoch: e, Error: "boom"})
	if got := grants(fx)["s1"]; strings.Join(got, ",") != "a" {
		t.Fatalf("after a copy ended, granted %v, want a (first in line)", got)
	}
	// A capacity raise makes room at once.
	fx = x.frame("s1", lanwire.TypeCapacity, &lanwire.Capacity{MaxProcesses: 3})
	if got := grants(fx)["s1"]; strings.Join(got, ",") != "0-late" {
		t.Fatalf("after capacity grew, granted %v, want 0-late", got)
	}
}

// TestPlacementPinned: a need pinned to a machine goes there, however
// loaded, and waits while it is not connected.
func TestPlacementPinned(t *testing.T) {
	x := newH(t)
	x.placer("s1", "m1", 0)
	x.addStep("a", "b")
	pinned := lanwire.Need{Instance: "p", Module: "web", Machine: &lanwire.MachineConstraint{ID: "m1"}}
	other := lanwire.Need{Instance: "q", Module: "web", Machine: &lanwire.MachineConstraint{ID: "m3"}}
	x.placer("s2", "m2", 0)
	if err := x.st.AddNeeds(x.now, []lanwire.Need{pinned, other}, "api"); err != nil {
		t.Fatal(err)
	}
	g := grants(x.step())
	if strings.Join(g["s1"], ",") != "p" || len(g["s2"]) != 0 {
		t.Fatalf("grants = %v, want p on s1 and q waiting", g)
	}
	g = grants(x.placer("s3", "m3", 0))
	if strings.Join(g["s3"], ",") != "q" {
		t.Fatalf("grants = %v, want q on s3 once m3 connects", g)
	}
	// A module no master serves waits.
	if err := x.st.AddNeeds(x.now, []lanwire.Need{{Instance: "d", Module: "db"}}, "api"); err != nil {
		t.Fatal(err)
	}
	if g := grants(x.step()); len(g) != 0 {
		t.Fatalf("granted %v for a module nobody serves", g)
	}
	x.wantState("d", "pending", "")
}

// TestPlacementAfterFence: a vanished master's needs are placed
// elsewhere at its fence, not before.
func TestPlacementAfterFence(t *testing.T) {
	x := newH(t)
	x.placer("s1", "m1", 0)
	x.addStep("a")
	x.placer("s2", "m2", 0)
	x.st.Ended(x.now, "s1", EndVanished, x.now, x.now)
	if g := grants(x.step()); len(g) != 0 {
		t.Fatalf("granted %v before the fence", g)
	}
	fence := x.cfg.Timings.ExitFence() + x.cfg.Margin
	if g := grants(x.at(fence - time.Millisecond)); len(g) != 0 {
		t.Fatalf("granted %v before the fence", g)
	}
	if g := grants(x.at(fence)); strings.Join(g["s2"], ",") != "a" {
		t.Fatalf("at the fence granted %v, want a on s2", g)
	}
}

// TestPlacementNoClaims: a placement master's claim is refused, and
// masters of the claims protocol still get needs lists beside it.
func TestPlacementNoClaims(t *testing.T) {
	x := newH(t)
	x.placer("s1", "m1", 1)
	x.addStep("a", "b")
	fx := x.frame("s1", lanwire.TypeClaim, &lanwire.Claim{Instance: "b"})
	if e := sent[*lanwire.Error](t, fx, "s1", lanwire.TypeError); !strings.Contains(e.Message, "does not claim") {
		t.Fatalf("error = %q", e.Message)
	}
	fx = x.hello("old", "m9", idB)
	x.wantOffered(fx, "old", "b")
	x.grant("old", "b")
}

// TestPlacementFinalDecline: a need a master can never run as it is
// counts a failed attempt and is not placed there again, after its
// backoff too, until the master says hello anew or the need changes.
func TestPlacementFinalDecline(t *testing.T) {
	x := newH(t)
	x.placer("s1", "m1", 0)
	g := sent[*lanwire.Grant](t, x.addStep("w1"), "s1", lanwire.TypeGrant)
	fx := x.frame("s1", lanwire.TypeDecline, &lanwire.Decline{Instance: "w1", Epoch: g.Epoch, Reason: "no ws here", Final: true})
	none(t, fx, "s1", lanwire.TypeGrant)
	st, _ := x.st.NeedStatus("w1")
	if st.Attempts != 1 || !strings.Contains(st.LastError, "no ws here") {
		t.Fatalf("status = %+v, want 1 attempt and the reason", st)
	}
	if g := grants(x.at(time.Hour)); len(g) != 0 {
		t.Fatalf("granted %v again to the master that cannot run it", g)
	}
	x.placer("s2", "m1", 0)
	x.wantState("w1", "granted", "m1")
}
