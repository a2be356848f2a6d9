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
package leadership

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
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

// Done is closed once the leadership is lost or has lapsed.
func (l *Lead) Done() <-chan struct{} { return l.done }

// Guard is the compare every write of the leader must carry: its
// election key is still the one it created.
func (l *Lead) Guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.e.Key()), "=", l.e.Rev())
}

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
	resp, err := cli.Get(ctx, ElectionKey(prefix)+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	return string(resp.Kvs[0].Value), nil
}

// validity is until when the lease surely lives.
type validity struct {
	mu    sync.Mutex
	until time.Time
}

// renewed records a renewal sent at sent and granted ttl.
func (v *validity) renewed(sent time.Time, ttl time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ttl <= 0 {
		// The lease is gone: never valid again.
		v.until = time.Time{}
		return
	}
	if u := sent.Add(ttl); u.After(v.until) {
		v.until = u
	}
}

func (v *validity) valid(now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return now.Before(v.until)
}
