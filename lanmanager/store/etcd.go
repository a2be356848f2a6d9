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
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd is the Store of LAN managers that share their state through etcd.
// Keys live under a prefix: <prefix>/instances/<name>,
// <prefix>/machines/<id> and <prefix>/epoch, with the same JSON records
// as Bolt's.
//
// A Batch may hold more records than etcd allows in one transaction
// (--max-txn-ops, 128 by default), so Commit writes it in transactions of
// at most txnOps, each guarded by the leader's compare (Guard): a LAN
// manager that is no longer the leader writes nothing more. The order
// keeps any prefix of a batch consistent for the next leader: the epoch
// and the machines first (a stored copy's machine is always known), then
// the instances, then the machines that are gone. Nothing of a batch
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
}

// txnOps is the most operations Commit puts in one transaction.
const txnOps = 100

// ErrNotLeader is Commit's error when the guard no longer holds.
var ErrNotLeader = errors.New("no longer the leader: another LAN manager leads")

// NewEtcd returns a Store on cli under prefix (e.g. "/allex").
func NewEtcd(cli *clientv3.Client, prefix string) *Etcd {
	return &Etcd{cli: cli, prefix: strings.TrimSuffix(prefix, "/"), Timeout: 10 * time.Second}
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
	var s Snapshot
	err := e.each(e.key("instances")+"/", func(k, v []byte) error {
		var in Instance
		if err := json.Unmarshal(v, &in); err != nil {
			return fmt.Errorf("instance %q: %w", k, err)
		}
		s.Instances = append(s.Instances, in)
		return nil
	})
	if err == nil {
		err = e.each(e.key("machines")+"/", func(k, v []byte) error {
			var m Machine
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("machine %q: %w", k, err)
			}
			s.Machines = append(s.Machines, m)
			return nil
		})
	}
	if err == nil {
		s.Epoch, err = e.epoch()
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("store load: %w", err)
	}
	sortInstances(s.Instances)
	return s, nil
}

// each calls f for every key under prefix, a page at a time.
func (e *Etcd) each(prefix string, f func(k, v []byte) error) error {
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
			if err := f(kv.Key, kv.Value); err != nil {
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
	ops, err := e.ops(b)
	if err != nil {
		return err
	}
	for chunk := range slices.Chunk(ops, txnOps) {
		if err := e.txn(chunk); err != nil {
			return fmt.Errorf("store commit: %w", err)
		}
	}
	return nil
}

// txn runs one guarded transaction, again while e.retry allows.
func (e *Etcd) txn(ops []clientv3.Op) error {
	for {
		timeout := e.Timeout
		if e.retry != nil {
			timeout = min(timeout, time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		resp, err := e.cli.Txn(ctx).If(e.guard...).Then(ops...).Commit()
		cancel()
		switch {
		case err == nil && !resp.Succeeded:
			return ErrNotLeader
		case err == nil:
			return nil
		case e.retry == nil || !e.retry():
			return err
		}
		time.Sleep(retryEvery)
	}
}

// ops lists a batch's writes in the order Commit makes them.
func (e *Etcd) ops(b Batch) ([]clientv3.Op, error) {
	var ops []clientv3.Op
	if b.Epoch != 0 {
		ops = append(ops, clientv3.OpPut(e.key("epoch"), strconv.FormatUint(b.Epoch, 10)))
	}
	ops, gone, err := writes(e, ops, nil, "machines", b.Machines)
	if err != nil {
		return nil, err
	}
	ops, deleted, err := writes(e, ops, nil, "instances", b.Instances)
	if err != nil {
		return nil, err
	}
	return append(append(ops, deleted...), gone...), nil
}

// writes appends to puts the records of m under kind, in key order, and
// to dels the deletions of its nil ones.
func writes[V any](e *Etcd, puts, dels []clientv3.Op, kind string, m map[string]*V) (_, _ []clientv3.Op, err error) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] == nil {
			dels = append(dels, clientv3.OpDelete(e.key(kind, k)))
			continue
		}
		v, err := json.Marshal(m[k])
		if err != nil {
			return nil, nil, err
		}
		puts = append(puts, clientv3.OpPut(e.key(kind, k), string(v)))
	}
	return puts, dels, nil
}

// Close implements Store; the client is the caller's.
func (e *Etcd) Close() error { return nil }
