package needs

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanwire"
)

// m drives a State on a fake boot-time clock.
type m struct {
	t    *testing.T
	st   *State
	now  time.Duration
	busy map[string]bool
	capa lanwire.Capacity
}

const boot = time.Hour // the fake clock starts an hour after boot

func newM(t *testing.T, maxProcs int) *m {
	x := &m{t: t, now: boot, busy: map[string]bool{}, capa: lanwire.Capacity{MaxProcesses: maxProcs}}
	x.st = NewState(Config{
		MachineID: "m1", Identity: "0123456789abcdef", Modules: []string{"web"}, MaxProcesses: maxProcs,
		Capacity: func() lanwire.Capacity { return x.capa },
		Busy:     func(inst string) bool { return x.busy[inst] },
	})
	return x
}

func (x *m) at(d time.Duration) []Effect {
	x.now = boot + d
	if next, ok := x.st.Next(); ok && x.now >= next {
		x.st.Tick(x.now)
	}
	return x.st.Take()
}

func (x *m) welcome() []Effect {
	x.st.Welcomed(x.now, &lanwire.Welcome{SessionID: "s", Timings: lanwire.DefaultTimings()}, x.now)
	return x.st.Take()
}

func (x *m) frame(typ string, p any) []Effect {
	x.st.Frame(x.now, typ, p)
	return x.st.Take()
}

func (x *m) child(ev ChildEvent) []Effect {
	x.st.Child(x.now, ev)
	return x.st.Take()
}

func web(inst string) lanwire.Need {
	return lanwire.Need{Instance: inst, Module: "web", Protocols: []string{"tcp"}}
}

// grant grants inst under epoch and returns the start effect's need.
func (x *m) grant(inst string, epoch uint64) {
	x.t.Helper()
	fx := x.frame(lanwire.TypeGrant, &lanwire.Grant{Need: web(inst), Epoch: epoch})
	if len(fx) != 1 || fx[0].Kind != DoStart || fx[0].Epoch != epoch {
		x.t.Fatalf("grant %s: effects %+v, want a start", inst, fx)
	}
	x.st.Started(inst, epoch, lanwire.Ports{"tcp": 15000})
}

func sends(fx []Effect, typ string) []any {
	var out []any
	for _, e := range fx {
		if e.Kind == DoSend && e.Type == typ {
			out = append(out, e.Payload)
		}
	}
	return out
}

func kinds(fx []Effect, k int) []Effect {
	var out []Effect
	for _, e := range fx {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// TestLeaseAndFence: the lease runs from the hello's and then each
// answered ping's send time; the copies are told to stop fence-grace
// before it ends, once, whether or not the link still looks up.
func TestLeaseAndFence(t *testing.T) {
	x := newM(t, 0)
	fx := x.welcome()
	if l := kinds(fx, DoLease); len(l) != 1 || l[0].Until != boot+10*time.Second {
		t.Fatalf("lease effects %+v", l)
	}
	if f := kinds(fx, DoExitFence); len(f) != 1 || f[0].Duration != 2*time.Second {
		t.Fatalf("exit fence effects %+v", f)
	}
	x.grant("w1", 5)
	x.grant("w2", 6)
	// A ping sent at 2s is answered: the lease moves to 12s. An older
	// answer does not move it back.
	x.st.Renewed(boot + 2*time.Second)
	x.st.Renewed(boot + time.Second)
	fx = x.st.Take()
	if l := kinds(fx, DoLease); len(l) != 1 || l[0].Until != boot+12*time.Second {
		t.Fatalf("renewal effects %+v", fx)
	}
	if fx = x.at(9*time.Second - time.Millisecond); len(kinds(fx, DoStop)) != 0 {
		t.Fatalf("stopped before lease−grace: %+v", fx)
	}
	fx = x.at(9 * time.Second)
	if len(kinds(fx, DoStop)) != 2 {
		t.Fatalf("at lease−grace (9s): effects %+v, want both copies stopped", fx)
	}
	if fx = x.at(9500 * time.Millisecond); len(fx) != 0 {
		t.Fatalf("fenced twice: %+v", fx)
	}
	// Stopped copies are still held (and reported in a hello) until
	// their children have ended.
	if h := x.st.Hello(); len(h.Running) != 2 {
		t.Fatalf("hello running = %+v", h.Running)
	}
	x.child(ChildEvent{Kind: ChildEnded, Instance: "w1"})
	x.child(ChildEvent{Kind: ChildEnded, Instance: "w2"})
	if x.st.HoldsCopies() {
		t.Fatal("copies held after their children ended")
	}
}

// TestRenewedOnlyWhileConnected: a pong after the session ended renews
// nothing; the lease then runs out as announced.
func TestRenewedOnlyWhileConnected(t *testing.T) {
	x := newM(t, 0)
	x.welcome()
	x.grant("w1", 1)
	x.st.Disconnected()
	x.st.Renewed(boot + 5*time.Second)
	if fx := x.st.Take(); len(fx) != 0 {
		t.Fatalf("renewed while disconnected: %+v", fx)
	}
	if fx := x.at(7 * time.Second); len(kinds(fx, DoStop)) != 1 {
		t.Fatalf("at 7s: %+v, want the fence", fx)
	}
}

// TestReportsOfACopy: spawned once a run is ready; down with restarting
// when a reported run is followed by another; down when the child is
// done; each with the copy's epoch.
func TestReportsOfACopy(t *testing.T) {
	x := newM(t, 0)
	x.welcome()
	x.grant("w1", 7)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	x.child(ChildEvent{Kind: ChildRunning, Instance: "w1", PID: 10, StartedAt: start})
	if h := x.st.Hello(); len(h.Running) != 1 || h.Running[0].PID != 10 || h.Running[0].Epoch != 7 {
		t.Fatalf("hello = %+v", h.Running)
	}
	fx := x.child(ChildEvent{Kind: ChildReady, Instance: "w1", PID: 10})
	sp := sends(fx, lanwire.TypeSpawned)
	if len(sp) != 1 || sp[0].(*lanwire.Spawned).Epoch != 7 || sp[0].(*lanwire.Spawned).Ports["tcp"] != 15000 || !sp[0].(*lanwire.Spawned).StartedAt.Equal(start) {
		t.Fatalf("spawned = %+v", sp)
	}
	// An immediate restart: exit, backoff 0, new run.
	x.child(ChildEvent{Kind: ChildExited, Instance: "w1", PID: 10, ExitCode: -1, Signal: "SIGKILL", Reason: "killed by SIGKILL"})
	if fx = x.child(ChildEvent{Kind: ChildBackoff, Instance: "w1"}); len(sends(fx, lanwire.TypeDown)) != 0 {
		t.Fatalf("down at an immediate restart's backoff: %+v", fx)
	}
	fx = x.child(ChildEvent{Kind: ChildRunning, Instance: "w1", PID: 11})
	d := sends(fx, lanwire.TypeDown)
	if len(d) != 1 || !d[0].(*lanwire.Down).Restarting || d[0].(*lanwire.Down).PID != 10 || d[0].(*lanwire.Down).Signal != "SIGKILL" {
		t.Fatalf("restart downs = %+v", d)
	}
	fx = x.child(ChildEvent{Kind: ChildReady, Instance: "w1", PID: 11})
	if len(sends(fx, lanwire.TypeSpawned)) != 1 {
		t.Fatalf("no spawned for the new run: %+v", fx)
	}
	// A restart after a backoff reports down when the backoff begins.
	x.child(ChildEvent{Kind: ChildExited, Instance: "w1", PID: 11, ExitCode: 1})
	fx = x.child(ChildEvent{Kind: ChildBackoff, Instance: "w1", Delay: time.Second})
	if d := sends(fx, lanwire.TypeDown); len(d) != 1 || !d[0].(*lanwire.Down).Restarting {
		t.Fatalf("backoff downs = %+v", fx)
	}
	if h := x.st.Hello(); h.Running[0].PID != 0 {
		t.Fatalf("between runs, hello says pid %d, want 0", h.Running[0].PID)
	}
	// Done for good before its next run was ready: spawn_failed.
	fx = x.child(ChildEvent{Kind: ChildEnded, Instance: "w1", Reason: "crash loop"})
	if f := sends(fx, lanwire.TypeSpawnFailed); len(f) != 1 || f[0].(*lanwire.SpawnFailed).Epoch != 7 {
		t.Fatalf("end = %+v", fx)
	}
}

// TestStops: a stop of the held epoch stops the child and is confirmed by
// its down; one of another epoch is ignored; one of a copy not held here
// is confirmed at once.
func TestStops(t *testing.T) {
	x := newM(t, 0)
	x.welcome()
	x.grant("w1", 3)
	x.child(ChildEvent{Kind: ChildRunning, Instance: "w1", PID: 10})
	x.child(ChildEvent{Kind: ChildReady, Instance: "w1", PID: 10})
	if fx := x.frame(lanwire.TypeStop, &lanwire.Stop{Instance: "w1", Epoch: 2}); len(fx) != 0 {
		t.Fatalf("stale stop: %+v", fx)
	}
	fx := x.frame(lanwire.TypeStop, &lanwire.Stop{Instance: "w1", Epoch: 3})
	if s := kinds(fx, DoStop); len(s) != 1 || s[0].Instance != "w1" {
		t.Fatalf("stop: %+v", fx)
	}
	// Granted again to this master while the old copy stops: declined.
	fx = x.frame(lanwire.TypeGrant, &lanwire.Grant{Need: web("w1"), Epoch: 9})
	if f := sends(fx, lanwire.TypeDecline); len(f) != 1 || !strings.Contains(f[0].(*lanwire.Decline).Reason, "still stopping") {
		t.Fatalf("grant during stop: %+v", fx)
	}
	fx = x.child(ChildEvent{Kind: ChildEnded, Instance: "w1", Reason: "stopped"})
	if d := sends(fx, lanwire.TypeDown); len(d) != 1 || d[0].(*lanwire.Down).Epoch != 3 || d[0].(*lanwire.Down).Restarting {
		t.Fatalf("confirmation = %+v", fx)
	}
	fx = x.frame(lanwire.TypeRejected, &lanwire.Rejected{Instance: "gone", Epoch: 4})
	if d := sends(fx, lanwire.TypeDown); len(d) != 1 || d[0].(*lanwire.Down).Epoch != 4 {
		t.Fatalf("unknown copy: %+v", fx)
	}
}

// TestDeclines: a grant this master cannot take now is declined, with
// the reason, and nothing starts: full, a local child of that name, a
// module not configured here, an earlier copy still stopping, draining.
// The hello announces the placement protocol.
func TestDeclines(t *testing.T) {
	x := newM(t, 1)
	x.busy["local"] = true
	x.welcome()
	if h := x.st.Hello(); h.Protocol != lanwire.Placement {
		t.Fatalf("hello protocol %d, want %d", h.Protocol, lanwire.Placement)
	}
	decline := func(n lanwire.Need, epoch uint64, want string) {
		t.Helper()
		fx := x.frame(lanwire.TypeGrant, &lanwire.Grant{Need: n, Epoch: epoch})
		d := sends(fx, lanwire.TypeDecline)
		if len(d) != 1 || len(kinds(fx, DoStart)) != 0 || d[0].(*lanwire.Decline).Epoch != epoch || !strings.Contains(d[0].(*lanwire.Decline).Reason, want) {
			t.Fatalf("grant of %s: %+v, want a decline saying %q", n.Instance, fx, want)
		}
	}
	decline(web("local"), 1, "local process")
	decline(lanwire.Need{Instance: "d", Module: "db"}, 2, `module "db"`)
	x.grant("a", 3)
	decline(web("b"), 4, "no free capacity")
	x.frame(lanwire.TypeStop, &lanwire.Stop{Instance: "a", Epoch: 3})
	decline(web("a"), 5, "still stopping")
	x.child(ChildEvent{Kind: ChildEnded, Instance: "a", Reason: "stopped"})
	x.st.Drain()
	decline(web("c"), 6, "shutting down")
}

// TestStartFailed: a grant whose child cannot start is given back.
func TestStartFailed(t *testing.T) {
	x := newM(t, 0)
	x.welcome()
	x.frame(lanwire.TypeGrant, &lanwire.Grant{Need: web("w1"), Epoch: 2})
	x.st.StartFailed("w1", 2, errors.New("no ports left"))
	fx := x.st.Take()
	if f := sends(fx, lanwire.TypeSpawnFailed); len(f) != 1 || f[0].(*lanwire.SpawnFailed).Error != "no ports left" {
		t.Fatalf("effects %+v", fx)
	}
	if x.st.HoldsCopies() {
		t.Fatal("copy held after its start failed")
	}
}

// TestCheckFailureDeclined: a granted need the master can never run as
// it is (Check) is declined as final, with the reason, so the LAN manager
// does not place it here again; a changed one starts.
func TestCheckFailureDeclined(t *testing.T) {
	x := newM(t, 0)
	x.st.cfg.Check = func(n lanwire.Need) error {
		if slices.Contains(n.Protocols, "ws") {
			return errors.New("need w1 asks for protocol ws, which module web does not declare")
		}
		return nil
	}
	x.welcome()
	bad := lanwire.Need{Instance: "w1", Module: "web", Protocols: []string{"ws"}}
	fx := x.frame(lanwire.TypeGrant, &lanwire.Grant{Need: bad, Epoch: 1})
	d := sends(fx, lanwire.TypeDecline)
	if len(d) != 1 || len(kinds(fx, DoStart)) != 0 || !d[0].(*lanwire.Decline).Final || !strings.Contains(d[0].(*lanwire.Decline).Reason, "does not declare") {
		t.Fatalf("grant of a need that cannot run: %+v", fx)
	}
	if fx := x.frame(lanwire.TypeGrant, &lanwire.Grant{Need: web("w1"), Epoch: 2}); len(kinds(fx, DoStart)) != 1 {
		t.Fatalf("grant of the changed need: %+v, want a start", fx)
	}
}
