// Package leadership makes one of several LAN managers sharing an etcd the
// leader, and tells the leader, by its own clock, until when it surely
// still is one.
//
// The leader holds an etcd lease of TTL. It renews the lease itself
// (every 500 ms, or TTL/3 if shorter), and counts it valid until the send time of the last
// successful renewal plus the TTL the server granted: etcd cannot have
// expired the lease before then, so no other LAN manager can have been
// elected before then. Past that moment (a pause, a partition, a slow
// etcd) the leader must act as deposed: it answers no master's ping, so
// no master's lease is renewed by a LAN manager that no longer decides,
// and every write is guarded by the election key (Guard), so it stores
// nothing. Done is closed once the lease is known lost or has lapsed.
//
// A standby may end a surely dead leader's lease early (Hasten), but only
// after HastenAfter without a renewal; the leader renews masters' leases
// only while its own was renewed within HastenAfter (Acting).
package leadership

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/allex-go/allex/internal/strikes"
)

// Lead is this LAN manager's candidacy, and then leadership.
type Lead struct {
	cli    *clientv3.Client
	lease  clientv3.LeaseID
	ttl    time.Duration
	e      *concurrency.Election
	v      validity
	done   chan struct{}
	cancel context.CancelFunc
}

// Reconnect is the etcd client's dial option for a leader: it reconnects
// to etcd at most a second after etcd is back, not after gRPC's default
// backoff (up to two minutes), which would outlast the leader's lease.
var Reconnect = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
})

// ElectionKey is the election's prefix under a LAN's key prefix.
func ElectionKey(prefix string) string { return prefix + "/leader" }

// Campaign grants a lease of ttl and waits until this LAN manager, named
// by value (its advertised address), leads the LAN under prefix, or ctx
// ends.
func Campaign(ctx context.Context, cli *clientv3.Client, prefix, value string, ttl time.Duration) (*Lead, error) {
	secs := int64((ttl + time.Second - 1) / time.Second)
	sent := time.Now()
	g, err := cli.Grant(ctx, secs)
	if err != nil {
		return nil, fmt.Errorf("leadership: lease: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	l := &Lead{cli: cli, lease: g.ID, ttl: ttl, done: make(chan struct{}), cancel: cancel}
	l.v.renewed(sent, time.Duration(g.TTL)*time.Second)
	go l.renew(rctx)
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(g.ID), concurrency.WithContext(rctx))
	if err != nil {
		l.stop()
		return nil, fmt.Errorf("leadership: session: %w", err)
	}
	l.e = concurrency.NewElection(sess, ElectionKey(prefix))
	if err := l.e.Campaign(ctx, value); err != nil {
		l.stop()
		return nil, fmt.Errorf("leadership: campaign: %w", err)
	}
	if !l.Valid() {
		l.stop()
		return nil, errors.New("leadership: elected, but the lease lapsed meanwhile")
	}
	return l, nil
}

// renew keeps the lease alive and its validity known, until the lease is
// lost or has lapsed.
func (l *Lead) renew(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(renewEvery(l.ttl))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !l.Valid() {
			return
		}
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, renewEvery(l.ttl))
		resp, err := l.cli.KeepAliveOnce(rctx, l.lease)
		cancel()
		switch {
		case err == nil:
			l.v.renewed(sent, time.Duration(resp.TTL)*time.Second)
		case errors.Is(err, context.Canceled) && ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			// Revoked (Hasten, an operator) or expired: lost now.
			l.v.renewed(sent, 0)
			return
		}
		// Other errors (etcd unreachable) are retried while the lease is
		// valid; a lease etcd no longer has is never valid again, and
		// the next tick sees it lapse.
	}
}

// renewEvery is how often the lease is renewed: often enough that an
// etcd outage starting right after a renewal finds nearly all of the TTL
// left, since the validity counts from the last renewal.
func renewEvery(ttl time.Duration) time.Duration { return min(ttl/3, 500*time.Millisecond) }

// Valid says whether this LAN manager surely still leads.
func (l *Lead) Valid() bool { return l.v.valid(time.Now()) }

// Acting says whether this LAN manager may renew masters' leases now:
// it surely leads, and renewed its lease within HastenAfter, so no
// standby can have ended it (Hasten). It turns false during an etcd
// hiccup of over a second and true again with the next renewal.
func (l *Lead) Acting() bool { return l.v.acting(time.Now()) }

// Done is closed once the leadership is lost or has lapsed.
func (l *Lead) Done() <-chan struct{} { return l.done }

// Guard is the compare every write of the leader must carry: its
// election key is still the one it created.
func (l *Lead) Guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.e.Key()), "=", l.e.Rev())
}

// Rev is the revision at which this LAN manager was elected (its
// election key's creation).
func (l *Lead) Rev() int64 { return l.e.Rev() }

// Resign ends the leadership at once, so a standby takes over without
// waiting for the lease to expire.
func (l *Lead) Resign(ctx context.Context) error {
	l.v.renewed(time.Now(), 0)
	defer l.stop()
	_, err := l.cli.Revoke(ctx, l.lease)
	return err
}

func (l *Lead) stop() {
	l.cancel()
	<-l.done
}

// Leader returns the value (address) of the LAN's current leader, or ""
// when none leads.
func Leader(ctx context.Context, cli *clientv3.Client, prefix string) (string, error) {
	l, _, err := leaderLease(ctx, cli, prefix)
	return l, err
}

// Hasten ends, until ctx ends, the lease of a leader that is surely
// dead, so that a standby leads at once instead of after the lease's
// TTL: the leader has not renewed its lease for over a second (etcd has
// less than the TTL minus a second left on it), and its advertised
// address refuses connections (refused says so: no process listens there
// any more). A leader that is paused or cut off is not refused and keeps
// its lease to the end. A leader wrongly taken for dead (its advertised
// address is not its own) loses its lease at its next renewal, and all
// its writes are guarded by its election key.
func Hasten(ctx context.Context, cli *clientv3.Client, prefix, self string, refused func(leader string) bool, log func(msg string, args ...any)) {
	var leader string
	var lease clientv3.LeaseID
	dead := func() bool {
		var err error
		leader, lease, err = leaderLease(ctx, cli, prefix)
		if err != nil || leader == "" || leader == self {
			return false
		}
		ttl, err := cli.TimeToLive(ctx, lease)
		// TTL counts whole seconds left, rounded down: below the granted
		// TTL less HastenAfter, etcd heard no renewal for longer.
		return err == nil && ttl.TTL >= 0 && ttl.TTL < ttl.GrantedTTL-int64(HastenAfter/time.Second) && refused(leader)
	}
	for strikes.Wait(ctx, hastenEvery, hastenStrikes, dead) {
		if _, err := cli.Revoke(ctx, lease); err == nil {
			log("the leader is dead (its lease unrenewed, its address refusing): ended its lease", "leader", leader)
		}
	}
}

// HastenAfter is how long a leader's lease goes unrenewed before a
// standby may end it; the leader stops renewing masters' leases by then
// (Acting). hastenEvery spaces Hasten's checks; hastenStrikes in a row
// end a lease.
const (
	HastenAfter   = time.Second
	hastenEvery   = 150 * time.Millisecond
	hastenStrikes = 2
)

// leaderLease returns the leader's value and lease.
func leaderLease(ctx context.Context, cli *clientv3.Client, prefix string) (string, clientv3.LeaseID, error) {
	resp, err := cli.Get(ctx, ElectionKey(prefix)+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return "", 0, err
	}
	return string(resp.Kvs[0].Value), clientv3.LeaseID(resp.Kvs[0].Lease), nil
}

// Follow keeps, until ctx ends, the name of the LAN's leader as the
// election says, and returns its reader ("" until it is known): a
// standby names the leader on every refused link without asking etcd.
func Follow(ctx context.Context, cli *clientv3.Client, prefix string) func() string {
	var cur atomic.Value
	cur.Store("")
	read := func() {
		if l, err := Leader(ctx, cli, prefix); err == nil {
			cur.Store(l)
		}
	}
	go func() {
		for ctx.Err() == nil {
			// Watching starts before the read, so no change falls between.
			wch := cli.Watch(clientv3.WithRequireLeader(ctx), ElectionKey(prefix)+"/", clientv3.WithPrefix())
			read()
			for range wch {
				read()
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return func() string { return cur.Load().(string) }
}

// validity is until when the lease surely lives.
type validity struct {
	mu    sync.Mutex
	until time.Time
	// acts is until when the leader may renew masters' leases: Hasten
	// ends a lease only after HastenAfter without a renewal.
	acts time.Time
}

// renewed records a renewal sent at sent and granted ttl.
func (v *validity) renewed(sent time.Time, ttl time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ttl <= 0 {
		// The lease is gone: never valid again.
		v.until, v.acts = time.Time{}, time.Time{}
		return
	}
	if u := sent.Add(ttl); u.After(v.until) {
		v.until = u
	}
	if a := sent.Add(min(ttl, HastenAfter)); a.After(v.acts) {
		v.acts = a
	}
}

func (v *validity) acting(now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return now.Before(v.acts)
}

func (v *validity) valid(now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return now.Before(v.until)
}
