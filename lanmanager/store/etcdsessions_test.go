package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allex-go/allex/internal/etcdtest"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// published is instance name's copy on machine m, published with pid.
func published(name, m string, epoch uint64, pid int) *store.Instance {
	in := inst(name, epoch)
	in.Copy.Machine, in.Copy.Phase = m, store.PhasePublished
	in.Copy.Service = &lanwire.ServiceRecord{Instance: name, Module: "web", MachineID: m, Epoch: epoch, PID: pid, Ports: lanwire.Ports{"tcp": 15000}}
	return in
}

func keys(t *testing.T, cli *clientv3.Client, prefix string) map[string]int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Lease
	}
	return out
}

// waitFor polls f (etcd's own clock decides the lease expiries watched
// here) until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	for end := time.Now().Add(within); !f(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", within, what)
		}
	}
}

// TestEtcdServicesLiveOnTheirMachinesSession: a published service is a
// key under its machine's session lease, renewed while the machine is
// linked. Once no LAN manager renews it (this store closed, as a dead
// leader's), the service key goes by itself within the TTL, and the next
// leader loads the copy as granted, to be published again when its
// master reconciles.
func TestEtcdServicesLiveOnTheirMachinesSession(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
	s := store.NewEtcd(cli, "/lan")
	s.SessionTTL = 2 * time.Second
	err := s.Commit(store.Batch{
		Machines:  map[string]*store.Machine{"m1": {ID: "m1", Identity: "idA"}},
		Instances: map[string]*store.Instance{"a": published("a", "m1", 1, 100), "b": inst("b", 0)},
		Linked:    map[string]bool{"m1": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	k := keys(t, cli, "/lan/")
	if k["/lan/services/a"] == 0 || k["/lan/services/a"] != k["/lan/sessions/m1"] || k["/lan/instances/a"] != 0 {
		t.Fatalf("keys and their leases: %v", k)
	}
	time.Sleep(3 * time.Second) // past the TTL: renewed while linked
	snap, err := store.NewEtcd(cli, "/lan").Load()
	if err != nil || snap.Instances[0].Copy.Service == nil || snap.Instances[0].Copy.Service.PID != 100 {
		t.Fatalf("loaded while linked: %+v, %v", snap.Instances[0].Copy, err)
	}
	s.Close()
	waitFor(t, 5*time.Second, "service key gone after its session's TTL", func() bool {
		k := keys(t, cli, "/lan/")
		_, svc := k["/lan/services/a"]
		_, sess := k["/lan/sessions/m1"]
		return !svc && !sess
	})
	snap, err = store.NewEtcd(cli, "/lan").Load()
	if err != nil {
		t.Fatal(err)
	}
	if c := snap.Instances[0].Copy; c.Service != nil || c.Phase != store.PhaseGranted || c.Machine != "m1" || c.Epoch != 1 {
		t.Fatalf("copy loaded after its session ended: %+v", c)
	}
}

// TestEtcdSessionLostIsRenewed: a linked machine's lease found gone (here
// revoked, as etcd does when no one renewed it in time) is replaced, and
// its services are written under the new one.
func TestEtcdSessionLostIsRenewed(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
	s := store.NewEtcd(cli, "/lan")
	defer s.Close()
	err := s.Commit(store.Batch{
		Instances: map[string]*store.Instance{"a": published("a", "m1", 1, 100), "b": published("b", "m1", 2, 101)},
		Linked:    map[string]bool{"m1": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	old := keys(t, cli, "/lan/services/")["/lan/services/a"]
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "services written again under a new lease", func() bool {
		k := keys(t, cli, "/lan/")
		return len(k) == 5 && k["/lan/services/a"] != old && k["/lan/services/a"] == k["/lan/services/b"] && k["/lan/sessions/m1"] == k["/lan/services/a"]
	})
	// Unlinked, the machine's session is no longer renewed.
	if err := s.Commit(store.Batch{Linked: map[string]bool{"m1": false}, Instances: map[string]*store.Instance{"b": inst("b", 0)}}); err != nil {
		t.Fatal(err)
	}
	if k := keys(t, cli, "/lan/services/"); len(k) != 1 {
		t.Fatalf("after b was unpublished: %v", k)
	}
}

// TestWatchServicesResumes: the feed opens with the current services,
// then each change with its revision; a watch resumed after a revision
// sees exactly what came later; a compacted revision is ErrCompacted.
func TestWatchServicesResumes(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
	s := store.NewEtcd(cli, "/lan")
	defer s.Close()
	commit := func(b store.Batch) {
		t.Helper()
		if err := s.Commit(b); err != nil {
			t.Fatal(err)
		}
	}
	commit(store.Batch{Instances: map[string]*store.Instance{"a": published("a", "m1", 1, 100)}, Linked: map[string]bool{"m1": true}})
	watch := func(since int64) (<-chan adminapi.ServiceEvent, func() error) {
		ch := make(chan adminapi.ServiceEvent, 100)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- store.WatchServices(ctx, cli, "/lan", "", since, func(evs []adminapi.ServiceEvent) error {
				for _, ev := range evs {
					ch <- ev
				}
				return nil
			})
		}()
		return ch, func() error { cancel(); return <-done }
	}
	next := func(ch <-chan adminapi.ServiceEvent) adminapi.ServiceEvent {
		t.Helper()
		select {
		case ev := <-ch:
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
			return adminapi.ServiceEvent{}
		}
	}
	ch, stop := watch(0)
	if ev := next(ch); ev.Type != "up" || ev.Service.PID != 100 || ev.Revision == 0 {
		t.Fatalf("first event %+v", ev)
	}
	commit(store.Batch{Instances: map[string]*store.Instance{"a": published("a", "m1", 1, 200)}}) // restarted in place
	down, up := next(ch), next(ch)
	if down.Type != "down" || down.Service.PID != 100 || up.Type != "up" || up.Service.PID != 200 {
		t.Fatalf("restart seen as %+v then %+v", down, up)
	}
	commit(store.Batch{Instances: map[string]*store.Instance{"a": nil}})
	gone := next(ch)
	if gone.Type != "down" || gone.Service.PID != 200 || gone.Revision <= up.Revision {
		t.Fatalf("removal seen as %+v", gone)
	}
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	ch, stop = watch(up.Revision)
	if ev := next(ch); ev.Type != gone.Type || ev.Revision != gone.Revision || ev.Service.PID != 200 {
		t.Fatalf("resumed after %d: %+v, want %+v", up.Revision, ev, gone)
	}
	_ = stop()
	commit(store.Batch{Instances: map[string]*store.Instance{"c": published("c", "m1", 3, 300)}})
	if _, err := cli.Compact(context.Background(), gone.Revision+1); err != nil {
		t.Fatal(err)
	}
	err := store.WatchServices(context.Background(), cli, "/lan", "", up.Revision, func([]adminapi.ServiceEvent) error {
		return fmt.Errorf("emitted from a compacted revision")
	})
	if !errors.Is(err, adminapi.ErrCompacted) {
		t.Fatalf("resumed from a compacted revision: %v", err)
	}
	err = store.WatchServices(context.Background(), cli, "/lan", "", 1<<40, nil)
	if !errors.Is(err, adminapi.ErrInvalid) {
		t.Fatalf("resumed from a revision to come: %v", err)
	}
}

// TestEtcdServiceWrittenOnce: an instance stored again with the same
// service (another field changed) leaves its service key as it is: no
// write, no watch event.
func TestEtcdServiceWrittenOnce(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
	s := store.NewEtcd(cli, "/lan")
	defer s.Close()
	a := published("a", "m1", 1, 100)
	modRev := func(key string) int64 {
		resp, err := cli.Get(context.Background(), key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("%s: %v", key, err)
		}
		return resp.Kvs[0].ModRevision
	}
	for _, b := range []store.Batch{
		{Instances: map[string]*store.Instance{"a": a}, Linked: map[string]bool{"m1": true}},
		{Instances: map[string]*store.Instance{"a": func() *store.Instance { c := a.Clone(); c.Attempts = 3; return &c }()}},
	} {
		svc := int64(0)
		if len(b.Linked) == 0 {
			svc = modRev("/lan/services/a")
		}
		if err := s.Commit(b); err != nil {
			t.Fatal(err)
		}
		if svc != 0 && modRev("/lan/services/a") != svc {
			t.Fatal("the unchanged service key was written again")
		}
	}
}
