package store

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanwire"
	bolt "go.etcd.io/bbolt"
)

func TestStores(t *testing.T) {
	impls := []struct {
		name string
		open func(t *testing.T) (Store, func() Store)
	}{
		{"bolt", func(t *testing.T) (Store, func() Store) {
			dir := t.TempDir()
			s, err := OpenBolt(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s, func() Store {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s2, err := OpenBolt(dir)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s2.Close() })
				return s2
			}
		}},
		{"memory", func(t *testing.T) (Store, func() Store) {
			s := NewMemory()
			return s, func() Store { return s }
		}},
	}
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			s, reopen := impl.open(t)
			now := time.Now().UTC().Truncate(time.Millisecond)
			a := Instance{Need: lanwire.Need{Instance: "a", Module: "m", Protocols: []string{"tcp"}}, CreatedAt: now, Origin: "api"}
			b := Instance{Need: lanwire.Need{Instance: "b", Module: "m"}, Attempts: 2, NotBefore: now, LastError: "x"}
			c := Instance{Need: lanwire.Need{Instance: "c", Module: "m"}}
			if err := s.Commit(Batch{Instances: map[string]*Instance{"a": &a, "b": &b, "c": &c}, Epoch: 4}); err != nil {
				t.Fatal(err)
			}
			rec := lanwire.ServiceRecord{Instance: "a", Module: "m", MachineID: "m1", Epoch: 5, Address: "127.0.0.1", PID: 3, Ports: lanwire.Ports{"tcp": 5}}
			a.Copy = &Copy{Machine: "m1", Epoch: 5, Phase: PhasePublished, GrantedAt: now, Service: &rec}
			m1 := Machine{ID: "m1", Identity: "0123456789abcdef", Address: "127.0.0.1"}
			if err := s.Commit(Batch{Instances: map[string]*Instance{"a": &a, "c": nil}, Machines: map[string]*Machine{"m1": &m1}, Epoch: 5}); err != nil {
				t.Fatal(err)
			}
			// The store keeps its own copy: later changes by the caller do not leak in.
			rec.PID = 99
			a.Need.Protocols[0] = "ws"
			s = reopen()
			snap, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			if snap.Epoch != 5 || len(snap.Instances) != 2 || len(snap.Machines) != 1 || snap.Machines[0] != m1 {
				t.Fatalf("snapshot = %+v", snap)
			}
			ga, gb := snap.Instances[0], snap.Instances[1]
			if ga.Need.Instance != "a" || ga.Need.Protocols[0] != "tcp" || ga.Copy == nil || ga.Copy.Epoch != 5 || ga.Copy.Service.PID != 3 {
				t.Fatalf("a = %+v copy %+v", ga, ga.Copy)
			}
			if gb.Need.Instance != "b" || gb.Attempts != 2 || gb.LastError != "x" || !gb.NotBefore.Equal(now) || gb.Copy != nil {
				t.Fatalf("b = %+v", gb)
			}
			if err := s.Commit(Batch{Machines: map[string]*Machine{"m1": nil}}); err != nil {
				t.Fatal(err)
			}
			if snap, _ := s.Load(); len(snap.Machines) != 0 || snap.Epoch != 5 {
				t.Fatalf("after deleting the machine: %+v", snap)
			}
		})
	}
}

func TestMemoryFail(t *testing.T) {
	s := NewMemory()
	boom := errors.New("disk full")
	s.Fail = func(Batch) error { return boom }
	if err := s.Commit(Batch{Epoch: 1}); !errors.Is(err, boom) {
		t.Fatalf("Commit = %v", err)
	}
	if snap, _ := s.Load(); snap.Epoch != 0 {
		t.Fatalf("a failed commit changed the store: %+v", snap)
	}
}

func TestBoltLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = OpenBolt(dir)
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second open: %v, want a locked error", err)
	}
}

// TestMigrate: a database of a LAN manager without copies opens with its
// needs pending and its services as published copies with epochs.
func TestMigrate(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	rec := lanwire.ServiceRecord{Instance: "s1", Module: "m", MachineID: "m1", PID: 7, PublishedAt: now}
	err = db.Update(func(tx *bolt.Tx) error {
		n, _ := tx.CreateBucket(legacyNeeds)
		sv, _ := tx.CreateBucket(legacyServices)
		nb, _ := json.Marshal(legacyNeed{Need: lanwire.Need{Instance: "n1", Module: "m"}, Attempts: 3, CreatedAt: now, Origin: "api"})
		sb, _ := json.Marshal(legacyService{Record: rec, Need: lanwire.Need{Instance: "s1", Module: "m"}, Origin: "file:x"})
		if err := n.Put([]byte("n1"), nb); err != nil {
			return err
		}
		return sv.Put([]byte("s1"), sb)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	snap, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	rec.Epoch = 1
	want := []Instance{
		{Need: lanwire.Need{Instance: "n1", Module: "m"}, Attempts: 3, CreatedAt: now, Origin: "api"},
		{Need: lanwire.Need{Instance: "s1", Module: "m"}, Origin: "file:x", CreatedAt: now,
			Copy: &Copy{Machine: "m1", Epoch: 1, Phase: PhasePublished, GrantedAt: now, Service: &rec}},
	}
	if snap.Epoch != 1 || !reflect.DeepEqual(snap.Instances, want) {
		t.Fatalf("migrated = %+v (epoch %d), want %+v", snap.Instances, snap.Epoch, want)
	}
	if snap.Instances[1].Copy.Service.Epoch != 1 {
		t.Fatalf("service epoch = %d", snap.Instances[1].Copy.Service.Epoch)
	}
}
