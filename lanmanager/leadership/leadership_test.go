package leadership

import (
	"context"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/etcdtest"
)

// The lease is valid until the send time of its last renewal plus the
// granted TTL, never longer than a later renewal allows, and never again
// once etcd says it is gone.
func TestValidity(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	var v validity
	if v.valid(t0) {
		t.Fatal("valid before any renewal")
	}
	v.renewed(t0, 2*time.Second)
	if !v.valid(t0.Add(1999*time.Millisecond)) || v.valid(t0.Add(2*time.Second)) {
		t.Fatal("want valid for exactly the TTL from the send time")
	}
	// A late answer to an older renewal does not shorten it.
	v.renewed(t0.Add(-time.Second), 2*time.Second)
	if !v.valid(t0.Add(1500 * time.Millisecond)) {
		t.Fatal("an older renewal shortened the validity")
	}
	// It acts for HastenAfter from its last renewal's send time, so it
	// stops before a standby may end an unrenewed lease.
	if !v.acting(t0.Add(HastenAfter-time.Millisecond)) || v.acting(t0.Add(HastenAfter)) {
		t.Fatal("want acting for exactly HastenAfter from the send time")
	}
	v.renewed(t0.Add(time.Second), 0)
	if v.valid(t0.Add(1100*time.Millisecond)) || v.acting(t0.Add(1100*time.Millisecond)) {
		t.Fatal("valid after etcd said the lease is gone")
	}
}

// TestCampaign: one of two candidates leads; the other leads once the
// first resigns, and Leader names each in turn.
func TestCampaign(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := Campaign(ctx, cli, "/allex", "http://a", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Valid() {
		t.Fatal("new leader not valid")
	}
	if got, err := Leader(ctx, cli, "/allex"); got != "http://a" || err != nil {
		t.Fatalf("Leader = %q, %v", got, err)
	}
	bc := make(chan *Lead, 1)
	go func() {
		b, err := Campaign(ctx, cli, "/allex", "http://b", 2*time.Second)
		if err != nil {
			t.Error(err)
		}
		bc <- b
	}()
	select {
	case <-bc:
		t.Fatal("second candidate elected while the first leads")
	case <-time.After(3 * time.Second):
	}
	resigned := time.Now()
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	b := <-bc
	if b == nil {
		t.FailNow()
	}
	t.Logf("second elected %v after the first resigned", time.Since(resigned))
	if got, _ := Leader(ctx, cli, "/allex"); got != "http://b" {
		t.Fatalf("Leader = %q, want http://b", got)
	}
	select {
	case <-a.Done():
	default:
		t.Fatal("resigned lead not done")
	}
	if a.Valid() {
		t.Fatal("resigned lead still valid")
	}
	_ = b.Resign(ctx)
}

// TestHasten: a leader that renews keeps its lease even when its address
// is taken for refusing; once it stops renewing (dead) and its address
// refuses, a standby's Hasten ends its lease and the standby leads long
// before the lease's TTL would have run out.
func TestHasten(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := Campaign(ctx, cli, "/allex", "http://a", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	hctx, stopHasten := context.WithCancel(ctx)
	defer stopHasten()
	go Hasten(hctx, cli, "/allex", "http://b", func(string) bool { return true }, func(string, ...any) {})
	time.Sleep(3 * time.Second)
	if !a.Valid() {
		t.Fatal("a renewing leader lost its lease to Hasten")
	}
	a.stop() // dies: no more renewals, the lease left to run out
	died := time.Now()
	b, err := Campaign(ctx, cli, "/allex", "http://b", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stopHasten()
	t.Logf("standby led %v after the leader died (lease 10s)", time.Since(died))
	if took := time.Since(died); took > 8*time.Second {
		t.Fatalf("standby led %v after the leader died: the lease ran out, Hasten did nothing", took)
	}
	_ = b.Resign(ctx)
}
