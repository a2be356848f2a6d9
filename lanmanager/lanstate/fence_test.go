package lanstate

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// TestGrantAndPublish: a claim is granted with an epoch that is stored in
// the same batch as the grant frame; the spawned report's check publishes
// the service under that epoch.
func TestGrantAndPublish(t *testing.T) {
	x := newH(t)
	x.add("w1")
	fx := x.hello("s1", "m1", idA)
	w := sent[*lanwire.Welcome](t, fx, "s1", lanwire.TypeWelcome)
	if w.Timings != lanwire.DefaultTimings() || w.SessionID != "s1" {
		t.Fatalf("welcome = %+v", w)
	}
	x.wantOffered(fx, "s1", "w1")
	e := x.publish("s1", "w1")
	x.wantState("w1", adminapi.StateSatisfied, "m1")
	rec, _ := x.st.Service("w1")
	if rec.Epoch != e || e != 1 || rec.PID != 100 || rec.Address != "10.0.0.1" {
		t.Fatalf("record = %+v", rec)
	}
	snap, _ := x.store.Load()
	if c := snap.Instances[0].Copy; c == nil || c.Phase != store.PhasePublished || c.Epoch != e || len(snap.Machines) != 1 || snap.Machines[0].Identity != idA {
		t.Fatalf("stored = %+v", snap)
	}
}

// TestStaleEpochRefused: a report that names another epoch or another
// machine's copy is refused, and its copy is told to stop.
func TestStaleEpochRefused(t *testing.T) {
	x := newH(t)
	x.add("w1")
	x.hello("s1", "m1", idA)
	x.hello("s2", "m2", idB)
	e := x.grant("s1", "w1")
	fx := x.frame("s1", lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", Epoch: e + 1, PID: 7})
	if err := sent[*lanwire.Error](t, fx, "s1", lanwire.TypeError); !strings.Contains(err.Message, "stale") {
		t.Fatalf("error = %q", err.Message)
	}
	if st := sent[*lanwire.Stop](t, fx, "s1", lanwire.TypeStop); st.Epoch != e+1 {
		t.Fatalf("stop = %+v", st)
	}
	fx = x.frame("s2", lanwire.TypeDown, &lanwire.Down{Instance: "w1", Epoch: e})
	sent[*lanwire.Error](t, fx, "s2", lanwire.TypeError)
	if len(fx.Checks) != 0 || len(fx.Store.Instances) != 0 {
		t.Fatalf("a refused frame changed something: %+v", fx)
	}
	x.wantState("w1", adminapi.StateGranted, "m1")
}

// TestFenceTimelines: when a master's link ends, its copies stay its own
// (published, not offered) until its fence, which depends on how the link
// ended; then the services go down and the needs are offered elsewhere.
func TestFenceTimelines(t *testing.T) {
	lastHeard := 500 * time.Millisecond
	endAt := 700 * time.Millisecond
	for _, tc := range []struct {
		how  End
		ends time.Duration // from t0
	}{
		// Process gone: exit fence from the end, plus the margin.
		{EndVanished, endAt + 2*time.Second + time.Second},
		// Silence and the rest: the lease from the last heard time.
		{EndLease, lastHeard + 10*time.Second + time.Second},
		// The master said it runs nothing.
		{EndNoCopies, endAt},
	} {
		t.Run(tc.how.String(), func(t *testing.T) {
			x := newH(t)
			x.add("w1", "w2")
			x.hello("s1", "m1", idA)
			x.publish("s1", "w1")
			x.grant("s1", "w2")
			x.hello("s2", "m2", idB)
			x.at(endAt)
			x.st.Ended(x.now, "s1", tc.how, t0.Add(lastHeard), t0.Add(endAt))
			fx := x.step()
			if tc.how != EndNoCopies {
				x.wantServices("w1@m1")
				x.wantState("w2", adminapi.StateGranted, "m1")
				if got, _ := offered(fx, "s2"); len(got) != 0 {
					t.Fatalf("offered %v to m2 before m1's fence", got)
				}
				if next, _ := x.st.Next(); !next.Equal(t0.Add(tc.ends)) {
					t.Fatalf("next = %v, want the fence at %v", next.Sub(t0), tc.ends)
				}
				x.at(tc.ends - time.Millisecond)
				x.wantServices("w1@m1")
				fx = x.at(tc.ends)
			}
			x.wantEvents(fx, "down w1")
			x.wantServices()
			x.wantOffered(fx, "s2", "w1", "w2")
			if ms := x.st.Machines(); len(ms) != 1 || ms[0].ID != "m2" {
				t.Fatalf("machines = %+v", ms)
			}
		})
	}
}

// TestReconnectWithinFence: a master that comes back before its fence
// keeps the copies it reports; those it does not report have ended.
func TestReconnectWithinFence(t *testing.T) {
	x := newH(t)
	x.add("w1", "w2", "w3")
	x.hello("s1", "m1", idA)
	e1 := x.publish("s1", "w1")
	e2 := x.publish("s1", "w2")
	e3 := x.grant("s1", "w3")
	x.at(time.Second)
	x.st.Ended(x.now, "s1", EndLease, x.now, x.now)
	x.step()
	x.at(5 * time.Second)
	fx := x.hello("s2", "m1", idA,
		lanwire.RunningService{Instance: "w1", Module: "web", Epoch: e1, PID: 100, Ports: lanwire.Ports{"tcp": 5000}},
		lanwire.RunningService{Instance: "w3", Module: "web", Epoch: e3, PID: 0},
		lanwire.RunningService{Instance: "zz", Module: "web", Epoch: 99, PID: 5})
	_ = e2
	x.wantEvents(fx, "down w2")
	x.wantServices("w1@m1")
	x.wantState("w3", adminapi.StateGranted, "m1")
	if st := sent[*lanwire.Stop](t, fx, "s2", lanwire.TypeStop); st.Instance != "zz" || st.Epoch != 99 {
		t.Fatalf("stop = %+v", st)
	}
	// The fence that was running is gone with the reconnect.
	x.at(30 * time.Second)
	x.wantServices("w1@m1")
}

// TestReadoptChecksRunningCopy: a granted copy reported running after a
// reconnect gets its port check and is published.
func TestReadoptChecksRunningCopy(t *testing.T) {
	x := newH(t)
	x.add("w1")
	x.hello("s1", "m1", idA)
	e := x.grant("s1", "w1")
	x.st.Ended(x.now, "s1", EndLease, x.now, x.now)
	fx := x.hello("s2", "m1", idA, lanwire.RunningService{Instance: "w1", Module: "web", Epoch: e, PID: 8, Ports: lanwire.Ports{"tcp": 6000}})
	if len(fx.Checks) != 1 || fx.Checks[0].Ports["tcp"] != 6000 {
		t.Fatalf("checks = %+v", fx.Checks)
	}
	x.st.CheckDone(x.now, "w1", fx.Checks[0].ID, nil)
	x.step()
	x.wantServices("w1@m1")
}

// TestIdentity: a second master with the machine id of a live one is
// refused; while the first may still run copies it stays refused; once
// the first is fenced, the second becomes the machine.
func TestIdentity(t *testing.T) {
	x := newH(t)
	x.add("w1")
	x.hello("s1", "m1", idA)
	x.publish("s1", "w1")
	fx := x.hello("clone", "m1", idB)
	if msg := sent[*lanwire.Error](t, fx, "clone", lanwire.TypeError).Message; !strings.Contains(msg, "machineid") || !strings.Contains(msg, "aaaaaaaa") {
		t.Fatalf("refusal = %q", msg)
	}
	if len(fx.Closes) != 1 || fx.Closes[0].Session != "clone" || fx.Closes[0].Code != lanwire.CloseRefused {
		t.Fatalf("closes = %+v", fx.Closes)
	}
	none(t, fx, "s1", lanwire.TypeStop)
	x.wantServices("w1@m1")
	// The first master dies: the clone is still refused until its fence.
	x.at(time.Second)
	x.st.Ended(x.now, "s1", EndVanished, x.now, x.now)
	x.step()
	x.at(3 * time.Second)
	fx = x.hello("clone2", "m1", idB)
	sent[*lanwire.Error](t, fx, "clone2", lanwire.TypeError)
	x.at(4 * time.Second)
	fx = x.hello("clone3", "m1", idB)
	sent[*lanwire.Welcome](t, fx, "clone3", lanwire.TypeWelcome)
	x.wantOffered(fx, "clone3", "w1")
	if ms := x.st.Machines(); len(ms) != 1 || ms[0].Identity != idB[:8] {
		t.Fatalf("machines = %+v", ms)
	}
}

// TestSessionReplaced: a new session of the same master closes the old
// one, whose end then changes nothing.
func TestSessionReplaced(t *testing.T) {
	x := newH(t)
	x.add("w1")
	x.hello("s1", "m1", idA)
	e := x.publish("s1", "w1")
	fx := x.hello("s2", "m1", idA, lanwire.RunningService{Instance: "w1", Module: "web", Epoch: e, PID: 100, Ports: lanwire.Ports{"tcp": 5000}})
	if len(fx.Closes) != 1 || fx.Closes[0].Session != "s1" || fx.Closes[0].Code != lanwire.CloseReplaced {
		t.Fatalf("closes = %+v", fx.Closes)
	}
	x.st.Ended(x.now, "s1", EndVanished, x.now, x.now)
	x.step()
	x.at(time.Minute)
	x.wantServices("w1@m1")
	x.wantEvents(x.frame("s1", lanwire.TypeDown, &lanwire.Down{Instance: "w1", Epoch: e}))
}

// TestRestartWaitsForKnownMachines: after a LAN manager restart, pending
// needs are offered at once, but a copy granted or published on a machine
// waits for that machine until the lease and margin have passed.
func TestRestartWaitsForKnownMachines(t *testing.T) {
	x := newH(t)
	x.add("g1", "p1", "p2", "free")
	x.hello("s1", "m1", idA)
	eg := x.grant("s1", "g1")
	x.publish("s1", "p1")
	x.hello("s2", "m2", idB)
	x.publish("s2", "p2")

	start := 10 * time.Second
	y := restore(t, testConfig(), x.store, nil, t0.Add(start))
	fx := y.hello("n1", "m3", "cccccccccccccccc")
	y.wantOffered(fx, "n1", "free")
	y.wantServices("p1@m1", "p2@m2")
	// m1 comes back reporting its starting copy; it never reports p1.
	fx = y.hello("n2", "m1", idA, lanwire.RunningService{Instance: "g1", Module: "web", Epoch: eg, PID: 0})
	y.wantEvents(fx, "down p1")
	y.wantState("g1", adminapi.StateGranted, "m1")
	// m2 never comes back: its copy ends at restart + lease + margin.
	y.at(start + 11*time.Second - time.Millisecond)
	y.wantServices("p2@m2")
	fx = y.at(start + 11*time.Second)
	y.wantEvents(fx, "down p2")
	y.wantOffered(fx, "n1", "free", "p1", "p2")
	// Epochs keep growing across the restart.
	if e := y.grant("n1", "free"); e != 4 {
		t.Fatalf("first epoch after restart = %d, want 4 (three grants before)", e)
	}
}

// TestGrantTimeoutStopsCopy: a grant not reported spawned in time is told
// to stop; the need is offered again only once the master confirms and
// its backoff has passed.
func TestGrantTimeoutStopsCopy(t *testing.T) {
	x := newH(t)
	if err := x.st.AddNeeds(x.now, []lanwire.Need{{Instance: "w1", Module: "web", TimeoutMS: 2000}}, "api"); err != nil {
		t.Fatal(err)
	}
	x.hello("s1", "m1", idA)
	x.hello("s2", "m2", idB)
	e := x.grant("s1", "w1")
	fx := x.at(2 * time.Second)
	if st := sent[*lanwire.Stop](t, fx, "s1", lanwire.TypeStop); st.Epoch != e || !strings.Contains(st.Reason, "expired") {
		t.Fatalf("stop = %+v", st)
	}
	x.wantState("w1", adminapi.StateStopping, "m1")
	fx = x.at(10 * time.Second)
	if got, _ := offered(fx, "s2"); len(got) != 0 {
		t.Fatalf("offered %v while the copy stops", got)
	}
	// A late spawned of the stopping copy is told to stop again.
	fx = x.frame("s1", lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", Epoch: e, PID: 9})
	sent[*lanwire.Stop](t, fx, "s1", lanwire.TypeStop)
	fx = x.frame("s1", lanwire.TypeDown, &lanwire.Down{Instance: "w1", Epoch: e, Reason: "stopped"})
	x.wantOffered(fx, "s2", "w1")
	x.wantState("w1", adminapi.StatePending, "")
}

// TestGrantTimeoutAfterBackoff: the need whose grant expired waits its
// backoff after the copy stopped.
func TestGrantTimeoutAfterBackoff(t *testing.T) {
	x := newH(t)
	if err := x.st.AddNeeds(x.now, []lanwire.Need{{Instance: "w1", Module: "web", TimeoutMS: 1000}}, "api"); err != nil {
		t.Fatal(err)
	}
	x.hello("s1", "m1", idA)
	e := x.grant("s1", "w1")
	x.at(time.Second)
	fx := x.frame("s1", lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: "w1", Epoch: e, Error: "stopped"})
	if got, _ := offered(fx, "s1"); len(got) != 0 {
		t.Fatalf("offered %v during the backoff", got)
	}
	fx = x.at(2 * time.Second)
	x.wantOffered(fx, "s1", "w1")
}

// TestRemoveStopsCopyFirst: a removed need's copy is told to stop and
// taken out of the registry; the same instance added again is offered
// only once that copy has confirmed its end.
func TestRemoveStopsCopyFirst(t *testing.T) {
	x := newH(t)
	x.add("w1")
	x.hello("s1", "m1", idA)
	x.hello("s2", "m2", idB)
	e := x.publish("s1", "w1")
	if err := x.st.RemoveNeed("w1"); err != nil {
		t.Fatal(err)
	}
	fx := x.step()
	sent[*lanwire.Stop](t, fx, "s1", lanwire.TypeStop)
	x.wantEvents(fx, "down w1")
	x.wantServices()
	if err := x.st.RemoveNeed("w1"); !errors.Is(err, adminapi.ErrNotFound) {
		t.Fatalf("second remove = %v", err)
	}
	x.add("w1")
	fx = x.step()
	if got, _ := offered(fx, "s2"); len(got) != 0 {
		t.Fatalf("offered %v while the old copy stops", got)
	}
	fx = x.frame("s1", lanwire.TypeDown, &lanwire.Down{Instance: "w1", Epoch: e})
	x.wantOffered(fx, "s2", "w1")
	// Removed with no copy: gone at once.
	if err := x.st.RemoveNeed("w1"); err != nil {
		t.Fatal(err)
	}
	fx = x.step()
	if rec, ok := fx.Store.Instances["w1"]; !ok || rec != nil {
		t.Fatalf("w1 not deleted from the store: %+v", fx.Store)
	}
}

// TestDownRestarting: a copy restarting in place stays granted to its
// master under the same epoch; a crash loop stops it instead.
func TestDownRestarting(t *testing.T) {
	cfg := testConfig()
	cfg.CrashLoopLimit = 2
	x := restore(t, cfg, store.NewMemory(), nil, t0)
	x.add("w1")
	x.hello("s1", "m1", idA)
	x.hello("s2", "m2", idB)
	e := x.publish("s1", "w1")
	fx := x.frame("s1", lanwire.TypeDown, &lanwire.Down{Instance: "w1", Epoch: e, Restarting: true})
	x.wantEvents(fx, "down w1")
	x.wantState("w1", adminapi.StateGranted, "m1")
	if got, _ := offered(fx, "s2"); len(got) != 0 {
		t.Fatalf("offered %v during an in-place restart", got)
	}
	republish := func() {
		t.Helper()
		fx := x.frame("s1", lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", Epoch: e, PID: 101})
		x.st.CheckDone(x.now, "w1", fx.Checks[0].ID, nil)
		x.step()
		x.wantServices("w1@m1")
	}
	republish()
	// Second and third downs within the window: over the limit of 2.
	x.frame("s1", lanwire.TypeDown, &lanwire.Down{Instance: "w1", Epoch: e, Restarting: true})
	republish()
	fx = x.frame("s1", lanwire.TypeDown, &lanwire.Down{Instance: "w1", Epoch: e, Restarting: true})
	if st := sent[*lanwire.Stop](t, fx, "s1", lanwire.TypeStop); !strings.Contains(st.Reason, "crash loop") {
		t.Fatalf("stop = %+v", st)
	}
	x.wantState("w1", adminapi.StateStopping, "m1")
}

// TestCheckOvertaken: a port check whose copy restarted meanwhile is
// dropped; a failed one rejects the copy and backs the need off.
func TestCheckOvertaken(t *testing.T) {
	x := newH(t)
	x.add("w1")
	x.hello("s1", "m1", idA)
	e := x.grant("s1", "w1")
	fx := x.frame("s1", lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", Epoch: e, PID: 5})
	stale := fx.Checks[0].ID
	x.frame("s1", lanwire.TypeDown, &lanwire.Down{Instance: "w1", Epoch: e, Restarting: true})
	x.st.CheckDone(x.now, "w1", stale, nil)
	if fx := x.step(); len(fx.Sends) != 0 {
		t.Fatalf("stale check result sent %s", describe(fx))
	}
	fx = x.frame("s1", lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", Epoch: e, PID: 6})
	x.st.CheckDone(x.now, "w1", fx.Checks[0].ID, errors.New("tcp port 1 unreachable"))
	fx = x.step()
	if r := sent[*lanwire.Rejected](t, fx, "s1", lanwire.TypeRejected); r.Epoch != e {
		t.Fatalf("rejected = %+v", r)
	}
	x.wantState("w1", adminapi.StateStopping, "m1")
	if st, _ := x.st.NeedStatus("w1"); st.Attempts != 1 || !strings.Contains(st.LastError, "unreachable") {
		t.Fatalf("status = %+v", st)
	}
}

// TestClaimDenied: claims of granted, unknown, unserved or constrained
// needs are denied with a reason.
func TestClaimDenied(t *testing.T) {
	x := newH(t)
	if err := x.st.AddNeeds(x.now, []lanwire.Need{
		{Instance: "w1", Module: "web"},
		{Instance: "db", Module: "db"},
		{Instance: "pin", Module: "web", Machine: &lanwire.MachineConstraint{ID: "m9"}},
	}, "api"); err != nil {
		t.Fatal(err)
	}
	x.hello("s1", "m1", idA)
	x.hello("s2", "m2", idB)
	x.grant("s1", "w1")
	for inst, want := range map[string]string{"w1": "already granted", "nope": "no such need", "db": "not served", "pin": "constraint"} {
		fx := x.frame("s2", lanwire.TypeClaim, &lanwire.Claim{Instance: inst})
		if d := sent[*lanwire.Deny](t, fx, "s2", lanwire.TypeDeny); !strings.Contains(d.Reason, want) {
			t.Errorf("claim %s denied %q, want %q", inst, d.Reason, want)
		}
	}
}

// TestAddNeedsAllOrNone: one bad or conflicting need refuses the batch.
func TestAddNeedsAllOrNone(t *testing.T) {
	x := newH(t)
	x.add("a")
	for _, batch := range [][]lanwire.Need{
		{{Instance: "b", Module: "web"}, {Instance: "a", Module: "web"}},
		{{Instance: "b", Module: "web"}, {Instance: "b", Module: "web"}},
		{{Instance: "b", Module: "web"}, {Instance: "../x", Module: "web"}},
	} {
		if err := x.st.AddNeeds(x.now, batch, "api"); err == nil {
			t.Fatalf("batch %+v accepted", batch)
		}
	}
	if len(x.st.Needs()) != 1 {
		t.Fatalf("needs = %+v", x.st.Needs())
	}
}

// TestNeedsFilesMerge: file needs are added, changed ones updated while
// they have no copy, and those gone from the files removed; API needs are
// left alone.
func TestNeedsFilesMerge(t *testing.T) {
	ms := store.NewMemory()
	f := func(inst, module string) FileNeed {
		return FileNeed{Need: lanwire.Need{Instance: inst, Module: module}, Origin: "file:a.json"}
	}
	x := restore(t, testConfig(), ms, []FileNeed{f("keep", "web"), f("change", "web"), f("drop", "web")}, t0)
	x.add("api1")
	y := restore(t, testConfig(), ms, []FileNeed{f("keep", "web"), f("change", "db"), f("new", "web"), f("api1", "db")}, t0.Add(time.Second))
	var got []string
	for _, n := range y.st.Needs() {
		got = append(got, n.Need.Instance+":"+n.Need.Module+":"+n.Origin)
	}
	want := "api1:web:api change:db:file:a.json keep:web:file:a.json new:web:file:a.json"
	if strings.Join(got, " ") != want {
		t.Fatalf("needs = %v, want %s", got, want)
	}
}

// TestLinkedInTheBatch: a master's link beginning and ending reaches the
// store in the batch (etcd keeps the machine's session alive meanwhile);
// a session replaced by a new one of the same machine leaves it linked.
func TestLinkedInTheBatch(t *testing.T) {
	x := newH(t)
	if fx := x.hello("s1", "m1", idA); !reflect.DeepEqual(fx.Store.Linked, map[string]bool{"m1": true}) {
		t.Fatalf("after hello: %v", fx.Store.Linked)
	}
	if fx := x.hello("s2", "m1", idA); !fx.Store.Linked["m1"] {
		t.Fatalf("after a second hello: %v", fx.Store.Linked)
	}
	x.st.Ended(x.now, "s1", EndLease, x.now, x.now) // the replaced one: no change
	if fx := x.step(); fx.Store.Linked != nil {
		t.Fatalf("after the replaced session ended: %v", fx.Store.Linked)
	}
	x.st.Ended(x.now, "s2", EndLease, x.now, x.now)
	if fx := x.step(); !reflect.DeepEqual(fx.Store.Linked, map[string]bool{"m1": false}) {
		t.Fatalf("after the link ended: %v", fx.Store.Linked)
	}
}
