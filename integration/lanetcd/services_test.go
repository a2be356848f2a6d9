//go:build linux

package lanetcd_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/internal/etcdtest"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
)

// events collects a watch stream's events.
type events struct {
	mu  sync.Mutex
	evs []adminapi.ServiceEvent
}

func (e *events) add(evs ...adminapi.ServiceEvent) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, evs...)
	return nil
}

// wait returns the events once there are n, failing after within.
func (e *events) wait(t *testing.T, n int, within time.Duration) []adminapi.ServiceEvent {
	t.Helper()
	var out []adminapi.ServiceEvent
	e2e.Eventually(t, within, func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		out = slices.Clone(e.evs)
		if len(out) < n {
			return fmt.Errorf("%d events, want %d: %+v", len(out), n, out)
		}
		return nil
	})
	return out
}

// TestServicesGoWithTheirSession: with no LAN manager alive, a master's
// services leave etcd once its session lapses (-lease), so no reader of
// etcd finds them any more; the next leader publishes them again when
// the master links to it.
func TestServicesGoWithTheirSession(t *testing.T) {
	st, members := etcdLAN(t, "/lan5")
	a := startLMTTL(t, st, "a", 2*time.Second, "-lease", "4s", "-fence-grace", "2s")
	a.WaitOutput("elected: leading the LAN", 30*time.Second)
	startMaster(t, a)
	addNeeds(t, a, "demo", "d", 2, time.Minute)
	published(t, a, 2)
	var seen events
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cli := etcdtest.Client(t, etcdtest.Endpoints(members))
	go func() {
		_ = store.WatchServices(ctx, cli, "/lan5", "", 0, func(evs []adminapi.ServiceEvent) error { return seen.add(evs...) })
	}()
	seen.wait(t, 2, 10*time.Second)
	if err := a.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	evs := seen.wait(t, 4, 15*time.Second)
	took := time.Since(killed)
	t.Logf("services left etcd %v after the only LAN manager was killed (session 4s)", took)
	for _, ev := range evs[2:] {
		if ev.Type != adminapi.EventDown {
			t.Fatalf("after the kill: %+v", evs[2:])
		}
	}
	if took < 2*time.Second {
		t.Errorf("services went %v after the kill, before their session could lapse", took)
	}
	a.start(t)
	a.WaitOutput("elected: leading the LAN", 30*time.Second)
	published(t, a, 2)
	seen.wait(t, 6, 10*time.Second)
}

// TestStandbyServesAdminAndWatch: a standby forwards admin calls to the
// leader and serves the watch stream from etcd; a watch resumed with
// ?since= on the new leader after a failover sees exactly what came
// after, and a compacted revision is refused with ErrCompacted.
func TestStandbyServesAdminAndWatch(t *testing.T) {
	st, members := etcdLAN(t, "/lan6")
	a, b := pair(t, st)
	b.standby(t, a.url)
	startMaster(t, a, b)
	var seen events
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watched := make(chan error, 1)
	go func() {
		watched <- b.client().Watch(ctx, "", func(ev adminapi.ServiceEvent) error { return seen.add(ev) })
	}()
	addNeeds(t, b, "demo", "d", 2, time.Minute) // forwarded
	if got := b.needs(t); len(got) != 2 {
		t.Fatalf("needs through the standby: %v", got)
	}
	evs := seen.wait(t, 2, 30*time.Second)
	last := max(evs[0].Revision, evs[1].Revision)
	if evs[0].Type != adminapi.EventUp || evs[1].Type != adminapi.EventUp || last == 0 {
		t.Fatalf("events through the standby: %+v", evs)
	}
	if err := a.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.WaitOutput("elected: leading the LAN", 30*time.Second)
	if err := <-watched; err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("the standby's watch stream at its election: %v", err)
	}
	e2e.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return b.client().RemoveNeed(ctx, "d000")
	})
	var resumed events
	go func() {
		_ = b.client().WatchSince(ctx, "", last, func(ev adminapi.ServiceEvent) error { return resumed.add(ev) })
	}()
	got := resumed.wait(t, 1, 30*time.Second)
	if got[0].Type != adminapi.EventDown || got[0].Service.Instance != "d000" || got[0].Revision <= last {
		t.Fatalf("resumed after %d: %+v", last, got)
	}
	time.Sleep(time.Second)
	if n := len(resumed.wait(t, 1, time.Second)); n != 1 {
		t.Fatalf("resumed watch: %d events, want 1: %+v", n, resumed.evs)
	}
	cli := etcdtest.Client(t, etcdtest.Endpoints(members))
	if _, err := cli.Compact(context.Background(), got[0].Revision); err != nil {
		t.Fatal(err)
	}
	err := b.client().WatchSince(ctx, "", last, func(adminapi.ServiceEvent) error { return nil })
	if !errors.Is(err, adminapi.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
}
