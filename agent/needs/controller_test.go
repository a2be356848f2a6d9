package needs

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/allex-go/allex/lanwire"
)

type fakeAgent struct {
	mu      sync.Mutex
	started []string
	stopped []string
	ctrl    *Controller
}

func (a *fakeAgent) StartNeed(n lanwire.Need) (lanwire.Ports, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.started = append(a.started, n.Instance)
	return lanwire.Ports{"tcp": 1}, nil
}

// StopNeed ends the child at once, as an agent would after its stop.
func (a *fakeAgent) StopNeed(inst string) {
	a.mu.Lock()
	a.stopped = append(a.stopped, inst)
	a.mu.Unlock()
	go a.ctrl.Child(ChildEvent{Kind: ChildEnded, Instance: inst, Reason: "stopped"})
}

func (a *fakeAgent) Capacity() lanwire.Capacity { return lanwire.Capacity{} }
func (a *fakeAgent) Busy(string) bool           { return false }

type fakeLink struct {
	mu   sync.Mutex
	sent []string
}

func (l *fakeLink) Send(typ string, _ any) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, typ)
	return nil
}

type fakeKeeper struct {
	mu    sync.Mutex
	lease []time.Duration
}

func (k *fakeKeeper) SetLease(until time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lease = append(k.lease, until)
}
func (k *fakeKeeper) SetExitFence(time.Duration) {}

// TestControllerFencesOnItsOwn: with no answered ping after the welcome,
// the controller stops the copy at lease − fence grace on its own timer,
// has told the keeper the lease, and confirms the stop once the child
// ended; HoldsCopies follows.
func TestControllerFencesOnItsOwn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		clock := func() time.Duration { return time.Hour + time.Since(start) }
		a, l, k := &fakeAgent{}, &fakeLink{}, &fakeKeeper{}
		c := NewController(Config{MachineID: "m1", Identity: "0123456789abcdef", Modules: []string{"web"}}, a, k, clock)
		a.ctrl = c
		c.SetLink(l)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go c.Run(ctx)
		c.Welcomed(&lanwire.Welcome{SessionID: "s", Timings: lanwire.DefaultTimings()}, clock())
		c.HandleFrame(lanwire.TypeGrant, &lanwire.Grant{Need: lanwire.Need{Instance: "w1", Module: "web"}, Epoch: 1})
		c.Flush()
		a.mu.Lock()
		started := slices.Clone(a.started)
		a.mu.Unlock()
		if !c.HoldsCopies() || !slices.Equal(started, []string{"w1"}) {
			t.Fatalf("after the grant: holds %v, started %v", c.HoldsCopies(), started)
		}
		time.Sleep(7*time.Second - time.Millisecond)
		synctest.Wait()
		a.mu.Lock()
		early := len(a.stopped)
		a.mu.Unlock()
		if early != 0 {
			t.Fatalf("stopped before lease − grace")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		c.Flush()
		a.mu.Lock()
		stopped := slices.Clone(a.stopped)
		a.mu.Unlock()
		if !slices.Equal(stopped, []string{"w1"}) || c.HoldsCopies() {
			t.Fatalf("at lease − grace: stopped %v, holds %v", stopped, c.HoldsCopies())
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		if len(k.lease) != 1 || k.lease[0] != time.Hour+10*time.Second {
			t.Fatalf("keeper leases %v", k.lease)
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if !slices.Contains(l.sent, lanwire.TypeSpawnFailed) {
			t.Fatalf("sent %v, want the stop confirmed", l.sent)
		}
	})
}
