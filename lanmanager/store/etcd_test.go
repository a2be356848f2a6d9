package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/allex-go/allex/internal/etcdtest"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

func inst(name string, epoch uint64) *store.Instance {
	in := &store.Instance{Need: lanwire.Need{Instance: name, Module: "web", Protocols: []string{"tcp"}}, CreatedAt: time.Unix(1, 0).UTC()}
	if epoch > 0 {
		in.Copy = &store.Copy{Machine: "m1", Epoch: epoch, Phase: store.PhaseGranted, GrantedAt: time.Unix(2, 0).UTC()}
	}
	return in
}

// TestEtcdRoundTrip: a batch larger than one etcd transaction is stored
// whole and loads back, deletions included.
func TestEtcdRoundTrip(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
	s := store.NewEtcd(cli, "/allex")
	b := store.Batch{Instances: map[string]*store.Instance{}, Machines: map[string]*store.Machine{"m1": {ID: "m1", Identity: "idA", Address: "10.0.0.1"}}, Epoch: 2500}
	for k := range 2500 {
		b.Instances[fmt.Sprintf("n%04d", k)] = inst(fmt.Sprintf("n%04d", k), uint64(k+1))
	}
	if err := s.Commit(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(store.Batch{Instances: map[string]*store.Instance{"n0000": nil}}); err != nil {
		t.Fatal(err)
	}
	snap, err := store.NewEtcd(cli, "/allex/").Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Instances) != 2499 || snap.Instances[0].Need.Instance != "n0001" || snap.Instances[2498].Copy.Epoch != 2500 {
		t.Fatalf("loaded %d instances, first %+v", len(snap.Instances), snap.Instances[0])
	}
	if len(snap.Machines) != 1 || snap.Machines[0].Identity != "idA" || snap.Epoch != 2500 {
		t.Fatalf("machines %+v, epoch %d", snap.Machines, snap.Epoch)
	}
	// Another prefix is another LAN.
	if other, err := store.NewEtcd(cli, "/other").Load(); err != nil || len(other.Instances) != 0 {
		t.Fatalf("other prefix: %d instances, %v", len(other.Instances), err)
	}
}

// TestEtcdDeposedLeaderWritesNothing: once another LAN manager leads, a
// commit guarded by the old leader's election key fails and stores
// nothing, however many transactions its batch needs.
func TestEtcdDeposedLeaderWritesNothing(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
	ctx := context.Background()
	campaign := func() (*concurrency.Session, *concurrency.Election) {
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
		if err != nil {
			t.Fatal(err)
		}
		e := concurrency.NewElection(sess, "/allex/leader")
		if err := e.Campaign(ctx, "lm"); err != nil {
			t.Fatal(err)
		}
		return sess, e
	}
	guard := func(e *concurrency.Election) clientv3.Cmp {
		return clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev())
	}
	sess1, e1 := campaign()
	old := store.NewEtcd(cli, "/allex")
	old.Guard(nil, guard(e1))
	if err := old.Commit(store.Batch{Instances: map[string]*store.Instance{"a": inst("a", 1)}}); err != nil {
		t.Fatal(err)
	}
	// The old leader's session ends (a pause past its TTL looks the same).
	if err := sess1.Close(); err != nil {
		t.Fatal(err)
	}
	_, e2 := campaign()
	big := store.Batch{Instances: map[string]*store.Instance{}, Tokens: map[string]*store.Token{"t1": {ID: "t1", Role: "admin"}},
		Revoked: map[string]*store.Revocation{"m9": {Machine: "m9", At: time.Unix(3, 0).UTC()}}}
	for k := range 300 {
		big.Instances[fmt.Sprintf("x%03d", k)] = inst(fmt.Sprintf("x%03d", k), 9)
	}
	if err := old.Commit(big); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("deposed commit: %v, want ErrNotLeader", err)
	}
	cur := store.NewEtcd(cli, "/allex")
	cur.Guard(nil, guard(e2))
	snap, err := cur.Load()
	if err != nil || len(snap.Instances) != 1 || snap.Instances[0].Need.Instance != "a" || len(snap.Tokens)+len(snap.Revoked) != 0 {
		t.Fatalf("after the deposed commit: %d instances, tokens %v, revoked %v (%v)", len(snap.Instances), snap.Tokens, snap.Revoked, err)
	}
	if err := cur.Commit(big); err != nil {
		t.Fatalf("leader's commit: %v", err)
	}
	if snap, err := cur.Load(); err != nil || len(snap.Instances) != 301 || len(snap.Tokens) != 1 || snap.Revoked[0].Machine != "m9" {
		t.Fatalf("after the leader's commit: %d instances, tokens %v, revoked %v (%v)", len(snap.Instances), snap.Tokens, snap.Revoked, err)
	}
	for _, k := range []string{"/allex/tokens/t1", "/allex/revoked/m9"} {
		if resp, err := cli.Get(ctx, k); err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("key %s: %v", k, err)
		}
	}
}
