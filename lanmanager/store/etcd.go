package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd is the Store of LAN managers that share their state through etcd.
// Keys live under a prefix: <prefix>/instances/<name>,
// <prefix>/machines/<id>, <prefix>/tokens/<id>, <prefix>/revoked/<machine>
// and <prefix>/epoch, with the same JSON records as Bolt's, and the
// machine sessions and services under their leases (etcdsessions.go).
// Load reads only these kinds' own directories, so other keys under the
// prefix (the election, <prefix>/ca of EtcdCA) are never taken for them.
//
// A Batch may hold more records than etcd allows in one transaction
// (--max-txn-ops, 128 by default), so Commit writes it in transactions of
// at most txnOps, each guarded by the leader's compare (Guard): a LAN
// manager that is no longer the leader writes nothing more. The order
// keeps any prefix of a batch consistent for the next leader: the tokens
// and revocations first (they depend on nothing, and a revocation or a
// withdrawn token holds even if the rest is cut off), then the epoch and
// the machines (a stored copy's machine is always known), then the
// instances, then the machines that are gone. Nothing of a batch
// leaves the LAN manager before all of it is stored; an admin request
// whose batch was cut off by a lost leadership got an error, and a retry
// of it may find some of its needs already added (409).
type Etcd struct {
	cli    *clientv3.Client
	prefix string
	guard  []clientv3.Cmp
	// retry says whether a transaction that failed for want of etcd may
	// be tried again (the leadership is still sure).
	retry func() bool
	// Timeout bounds one request to etcd.
	Timeout time.Duration
	// SessionTTL is a machine session's lease (default 10s): how long
	// its services stay listed once no LAN manager hears it.
	SessionTTL time.Duration

	ctx    context.Context // ends the keepalives on Close
	cancel context.CancelFunc
	// mu makes a commit and a session's renewal one at a time, so that
	// services, the view of the service keys held, is theirs alone.
	mu       sync.Mutex
	sessions map[string]*session
	services map[string]servicePut
	stale    []string // service keys of no copy, deleted by the next commit
}

// txnOps is the most operations Commit puts in one transaction.
const txnOps = 100

// ErrNotLeader is Commit's error when the guard no longer holds.
var ErrNotLeader = errors.New("no longer the leader: another LAN manager leads")

// NewEtcd returns a Store on cli under prefix (e.g. "/allex").
func NewEtcd(cli *clientv3.Client, prefix string) *Etcd {
	ctx, cancel := context.WithCancel(context.Background())
	return &Etcd{
		cli: cli, prefix: strings.TrimSuffix(prefix, "/"), Timeout: 10 * time.Second, SessionTTL: 10 * time.Second,
		ctx: ctx, cancel: cancel, sessions: map[string]*session{}, services: map[string]servicePut{},
	}
}

// Guard makes every later Commit conditional on cmps (the leader's
// election key still being its own). While retry says so, Commit tries a
// transaction that failed for want of etcd (an outage, a lost member)
// again instead of failing: the leader then holds its batch, answers
// nothing of it, and goes on once etcd is back.
func (e *Etcd) Guard(retry func() bool, cmps ...clientv3.Cmp) { e.retry, e.guard = retry, cmps }

// retryEvery spaces the attempts of a transaction etcd did not take.
const retryEvery = 250 * time.Millisecond

func (e *Etcd) key(parts ...string) string {
	return e.prefix + "/" + strings.Join(parts, "/")
}

// Load implements Store.
func (e *Etcd) Load() (Snapshot, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.sessions)
	clear(e.services)
	e.stale = nil
	var s Snapshot
	err := load(e, "instances", &s.Instances)
	if err == nil {
		err = load(e, "machines", &s.Machines)
	}
	if err == nil {
		err = load(e, "tokens", &s.Tokens)
	}
	if err == nil {
		err = load(e, "revoked", &s.Revoked)
	}
	if err == nil {
		s.Epoch, err = e.epoch()
	}
	if err == nil {
		err = e.loadServices(&s)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("store load: %w", err)
	}
	sortInstances(s.Instances)
	return s, nil
}

// load appends the records under <prefix>/<kind>/ to out, in key order.
func load[V any](e *Etcd, kind string, out *[]V) error {
	return e.each(e.key(kind)+"/", func(k, v []byte, _ int64) error {
		var rec V
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		*out = append(*out, rec)
		return nil
	})
}

// each calls f for every key under prefix, with its value and lease, a
// page at a time.
func (e *Etcd) each(prefix string, f func(k, v []byte, lease int64) error) error {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		ctx, cancel := context.WithTimeout(context.Background(), e.Timeout)
		resp, err := e.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(1000), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		cancel()
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			if err := f(kv.Key, kv.Value, kv.Lease); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (e *Etcd) epoch() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.Timeout)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.key("epoch"))
	if err != nil || len(resp.Kvs) == 0 {
		return 0, err
	}
	n, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("epoch %q: %w", resp.Kvs[0].Value, err)
	}
	return n, nil
}

// Commit implements Store, in guarded transactions of at most txnOps
// operations (see Etcd).
func (e *Etcd) Commit(b Batch) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	puts := map[string]*servicePut{}
	ops, err := e.ops(b, puts)
	if err == nil {
		err = e.txns(ops)
	}
	if err != nil {
		return fmt.Errorf("store commit: %w", err)
	}
	e.committed(b, puts)
	return nil
}

// txns runs ops in guarded transactions of at most txnOps operations.
func (e *Etcd) txns(ops []clientv3.Op) error {
	for chunk := range slices.Chunk(ops, txnOps) {
		err := e.try(func(ctx context.Context) error {
			resp, err := e.cli.Txn(ctx).If(e.guard...).Then(chunk...).Commit()
			if err == nil && !resp.Succeeded {
				return errNoRetry{ErrNotLeader}
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// errNoRetry is an error try returns at once.
type errNoRetry struct{ error }

// try runs f, again while e.retry allows (etcd may be down for a while),
// and returns its last error.
func (e *Etcd) try(f func(context.Context) error) error {
	for {
		timeout := e.Timeout
		if e.retry != nil {
			timeout = min(timeout, time.Second)
		}
		ctx, cancel := context.WithTimeout(e.ctx, timeout)
		err := f(ctx)
		cancel()
		var final errNoRetry
		switch {
		case err == nil:
			return nil
		case errors.As(err, &final):
			return final.error
		case e.retry == nil || !e.retry() || e.ctx.Err() != nil:
			return err
		}
		time.Sleep(retryEvery)
	}
}

// ops lists a batch's writes in the order Commit makes them, and records
// its service keys in puts.
func (e *Etcd) ops(b Batch, puts map[string]*servicePut) ([]clientv3.Op, error) {
	ops, err := e.accessOps(b)
	if err != nil {
		return nil, err
	}
	if b.Epoch != 0 {
		ops = append(ops, clientv3.OpPut(e.key("epoch"), strconv.FormatUint(b.Epoch, 10)))
	}
	ops, gone, err := writes(e, ops, nil, "machines", b.Machines, identity)
	if err != nil {
		return nil, err
	}
	for _, id := range sortedKeys(b.Linked) {
		if b.Linked[id] {
			if _, ops, err = e.leaseFor(id, ops); err != nil {
				return nil, err
			}
		}
	}
	ops, deleted, err := writes(e, ops, nil, "instances", b.Instances, withoutService)
	if err != nil {
		return nil, err
	}
	ops, deleted, err = e.serviceOps(b, ops, deleted, puts)
	if err != nil {
		return nil, err
	}
	return append(append(ops, deleted...), gone...), nil
}

// accessOps lists the writes and deletions of a batch's tokens and
// revocations, the first of its writes (see Etcd).
func (e *Etcd) accessOps(b Batch) ([]clientv3.Op, error) {
	ops, dels, err := writes(e, nil, nil, "revoked", b.Revoked, identity)
	if err == nil {
		ops, dels, err = writes(e, ops, dels, "tokens", b.Tokens, identity)
	}
	return append(ops, dels...), err
}

func identity[V any](v *V) *V { return v }

// withoutService is an instance record as etcd keeps it: the service is
// a key of its own, under its machine's lease.
func withoutService(in *Instance) *Instance {
	if in.Copy == nil || in.Copy.Service == nil {
		return in
	}
	c := *in.Copy
	c.Service = nil
	out := *in
	out.Copy = &c
	return &out
}

// writes appends to puts the records of m under kind, in key order, as
// view shows them, and to dels the deletions of its nil ones.
func writes[V any](e *Etcd, puts, dels []clientv3.Op, kind string, m map[string]*V, view func(*V) *V) (_, _ []clientv3.Op, err error) {
	for _, k := range sortedKeys(m) {
		if m[k] == nil {
			dels = append(dels, clientv3.OpDelete(e.key(kind, k)))
			continue
		}
		v, err := json.Marshal(view(m[k]))
		if err != nil {
			return nil, nil, err
		}
		puts = append(puts, clientv3.OpPut(e.key(kind, k), string(v)))
	}
	return puts, dels, nil
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// Close implements Store: it stops renewing the machine sessions (their
// leases run out unless the next leader renews them). The client is the
// caller's.
func (e *Etcd) Close() error {
	e.cancel()
	return nil
}
