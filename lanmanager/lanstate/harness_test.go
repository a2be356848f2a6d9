package lanstate

import (
	"slices"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// h drives a State on a fake clock and commits its batches to a memory
// store, as the LAN manager's loop does.
type h struct {
	t     *testing.T
	st    *State
	now   time.Time
	store *store.Memory
	cfg   Config
}

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func testConfig() Config {
	return Config{
		Timings:             lanwire.DefaultTimings(),
		Margin:              time.Second,
		RetryBackoffInitial: time.Second,
		RetryBackoffMax:     4 * time.Second,
		// No jitter: backoffs are exact.
		Jitter: func(d time.Duration) time.Duration { return d },
		// A window no test fills, so every test checks its bookkeeping.
		MaxPlacing: 1 << 30,
	}
}

func newH(t *testing.T) *h { return restore(t, testConfig(), store.NewMemory(), nil, t0) }

func restore(t *testing.T, cfg Config, ms *store.Memory, files []FileNeed, now time.Time) *h {
	t.Helper()
	snap, err := ms.Load()
	if err != nil {
		t.Fatal(err)
	}
	x := &h{t: t, st: New(cfg, snap, files, now), now: now, store: ms, cfg: cfg}
	x.step()
	return x
}

// step takes the effects of what happened since the last step and
// commits them, as the loop does before anything leaves.
func (x *h) step() Effects {
	x.t.Helper()
	fx := x.st.TakeEffects(x.now)
	if err := x.store.Commit(fx.Store); err != nil {
		x.t.Fatal(err)
	}
	x.checkWindow()
	return fx
}

// checkWindow fails the test if the placement window holds a copy that
// is not granted and unpublished on a connected master.
func (x *h) checkWindow() {
	x.t.Helper()
	for i, epoch := range x.st.placing {
		c := i.rec.Copy
		if x.st.insts[i.name()] != i || c == nil || c.Epoch != epoch || c.Phase != store.PhaseGranted || x.st.machines[c.Machine] == nil || x.st.machines[c.Machine].sess == nil {
			x.t.Fatalf("placement window holds %s (copy %+v)", i.name(), c)
		}
	}
}

// at moves the clock to t0+d and runs what is due.
func (x *h) at(d time.Duration) Effects {
	x.t.Helper()
	x.now = t0.Add(d)
	if next, ok := x.st.Next(); ok && !x.now.Before(next) {
		x.st.Tick(x.now)
	}
	return x.step()
}

const idA, idB = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"

func (x *h) hello(sid SessionID, machine, identity string, running ...lanwire.RunningService) Effects {
	x.t.Helper()
	x.st.Hello(x.now, sid, &lanwire.Hello{MachineID: machine, Identity: identity, Address: "10.0.0.1", Modules: []string{"web"}, Running: running})
	return x.step()
}

func (x *h) frame(sid SessionID, typ string, p any) Effects {
	x.t.Helper()
	x.st.Frame(x.now, sid, typ, p)
	return x.step()
}

func (x *h) add(names ...string) {
	x.t.Helper()
	x.addStep(names...)
}

// grant claims inst on sid and returns the grant's epoch.
func (x *h) grant(sid SessionID, inst string) uint64 {
	x.t.Helper()
	fx := x.frame(sid, lanwire.TypeClaim, &lanwire.Claim{Instance: inst})
	g := sent[*lanwire.Grant](x.t, fx, sid, lanwire.TypeGrant)
	// The grant is stored before it is sent.
	if rec := fx.Store.Instances[inst]; rec == nil || rec.Copy == nil || rec.Copy.Epoch != g.Epoch || fx.Store.Epoch != g.Epoch {
		x.t.Fatalf("grant of %s epoch %d not in its batch: %+v", inst, g.Epoch, fx.Store)
	}
	return g.Epoch
}

// publish grants inst to sid, reports it spawned and passes its check.
func (x *h) publish(sid SessionID, inst string) uint64 {
	x.t.Helper()
	e := x.grant(sid, inst)
	fx := x.frame(sid, lanwire.TypeSpawned, &lanwire.Spawned{Instance: inst, Epoch: e, PID: 100, Ports: lanwire.Ports{"tcp": 5000}})
	if len(fx.Checks) != 1 {
		x.t.Fatalf("spawned %s: checks = %+v", inst, fx.Checks)
	}
	x.st.CheckDone(x.now, inst, fx.Checks[0].ID, nil)
	fx = x.step()
	sent[*lanwire.Approved](x.t, fx, sid, lanwire.TypeApproved)
	x.wantEvents(fx, "up "+inst)
	return e
}

// sent returns the one frame of type typ sent to sid in fx.
func sent[T any](t *testing.T, fx Effects, sid SessionID, typ string) T {
	t.Helper()
	var out []T
	for _, s := range fx.Sends {
		if s.Session == sid && s.Type == typ {
			out = append(out, s.Payload.(T))
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d %s frames to %s, want 1; sends: %s", len(out), typ, sid, describe(fx))
	}
	return out[0]
}

func none(t *testing.T, fx Effects, sid SessionID, typ string) {
	t.Helper()
	for _, s := range fx.Sends {
		if s.Session == sid && s.Type == typ {
			t.Fatalf("unexpected %s to %s: %+v", typ, sid, s.Payload)
		}
	}
}

func describe(fx Effects) string {
	out := ""
	for _, s := range fx.Sends {
		out += string(s.Session) + ":" + s.Type + " "
	}
	return out
}

// offered returns the instances of the last needs list sent to sid, and
// whether one was sent.
func offered(fx Effects, sid SessionID) ([]string, bool) {
	var names []string
	ok := false
	for _, s := range fx.Sends {
		if s.Session == sid && s.Type == lanwire.TypeNeeds {
			names, ok = nil, true
			for _, n := range s.Payload.(*lanwire.Needs).Needs {
				names = append(names, n.Instance)
			}
		}
	}
	return names, ok
}

func (x *h) wantOffered(fx Effects, sid SessionID, want ...string) {
	x.t.Helper()
	got, ok := offered(fx, sid)
	if !ok || !slices.Equal(got, want) {
		x.t.Fatalf("needs list to %s = %v (sent %v), want %v", sid, got, ok, want)
	}
}

func (x *h) wantEvents(fx Effects, want ...string) {
	x.t.Helper()
	var got []string
	for _, ev := range fx.Events {
		got = append(got, ev.Type+" "+ev.Service.Instance)
	}
	if !slices.Equal(got, want) {
		x.t.Fatalf("events = %v, want %v", got, want)
	}
}

func (x *h) wantState(inst, state, machine string) {
	x.t.Helper()
	st, ok := x.st.NeedStatus(inst)
	if !ok || st.State != state || st.Machine != machine {
		x.t.Fatalf("%s: %+v (found %v), want %s on %q", inst, st, ok, state, machine)
	}
}

func (x *h) wantServices(want ...string) {
	x.t.Helper()
	var got []string
	for _, r := range x.st.Services(ServiceFilter{}) {
		got = append(got, r.Instance+"@"+r.MachineID)
	}
	if !slices.Equal(got, want) {
		x.t.Fatalf("services = %v, want %v", got, want)
	}
}
