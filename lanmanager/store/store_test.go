package store

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/etcdtest"
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
			// Encode as the other stores do, so that a record they cannot store fails here too.
			s.Fail = func(b Batch) error { _, err := json.Marshal(b); return err }
			return s, func() Store { return s }
		}},
		{"etcd", func(t *testing.T) (Store, func() Store) {
			cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
			s := NewEtcd(cli, "/lan")
			return s, func() Store {
				_ = s.Close()
				s2 := NewEtcd(cli, "/lan")
				t.Cleanup(func() { _ = s2.Close() })
				return s2
			}
		}},
	}
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			s, reopen := impl.open(t)
			now := time.Now().UTC().Truncate(time.Millisecond)
			a := Instance{Need: lanwire.Need{Instance: "a", Module: "m", Protocols: []string{"tcp"}}, CreatedAt: now, Origin: "api"}
			b := Instance{Need: lanwire.Need{Instance: "b", Module: "m"}, Attempts: 2, NotBefore: now, LastError: "x"}
			c := Instance{Need: lanwire.Need{Instance: "c", Module: "m"}}
			t1 := Token{ID: "t1", Role: "admin", SecretHash: "ab12", CreatedAt: now}
			t2 := Token{ID: "t2", Role: "master", SecretHash: "cd34", Description: "join", CreatedAt: now, Expires: now.Add(time.Hour)}
			r9 := Revocation{Machine: "m9", At: now, Reason: "stolen"}
			if err := s.Commit(Batch{Instances: map[string]*Instance{"a": &a, "b": &b, "c": &c}, Epoch: 4,
				Tokens: map[string]*Token{"t2": &t2, "t1": &t1}, Revoked: map[string]*Revocation{"m9": &r9}}); err != nil {
				t.Fatal(err)
			}
			rec := lanwire.ServiceRecord{Instance: "a", Module: "m", MachineID: "m1", Epoch: 5, Address: "127.0.0.1", PID: 3, Ports: lanwire.Ports{"tcp": 5}}
			a.Copy = &Copy{Machine: "m1", Epoch: 5, Phase: PhasePublished, GrantedAt: now, Service: &rec}
			m1 := Machine{ID: "m1", Identity: "0123456789abcdef", Address: "127.0.0.1"}
			r8 := Revocation{Machine: "m8", At: now}
			if err := s.Commit(Batch{Instances: map[string]*Instance{"a": &a, "c": nil}, Machines: map[string]*Machine{"m1": &m1}, Epoch: 5,
				Tokens: map[string]*Token{"t1": nil}, Revoked: map[string]*Revocation{"m8": &r8}}); err != nil {
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
			if !reflect.DeepEqual(snap.Tokens, []Token{t2}) || !reflect.DeepEqual(snap.Revoked, []Revocation{r8, r9}) {
				t.Fatalf("tokens %+v, revoked %+v", snap.Tokens, snap.Revoked)
			}
			if err := s.Commit(Batch{Machines: map[string]*Machine{"m1": nil}, Revoked: map[string]*Revocation{"m9": nil}}); err != nil {
				t.Fatal(err)
			}
			if snap, _ := s.Load(); len(snap.Machines) != 0 || snap.Epoch != 5 || !reflect.DeepEqual(snap.Revoked, []Revocation{r8}) {
				t.Fatalf("after deleting the machine and a revocation: %+v", snap)
			}
			unstorable(t, s)
		})
	}
}

// unstorable: a batch mixing an instance, a token and revocations, one
// of which no store can encode (JSON holds years up to 9999), stores
// nothing of it.
func unstorable(t *testing.T, s Store) {
	t.Helper()
	before, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	d := Instance{Need: lanwire.Need{Instance: "d", Module: "m"}}
	err = s.Commit(Batch{
		Instances: map[string]*Instance{"d": &d, "a": nil},
		Tokens:    map[string]*Token{"t3": {ID: "t3", Role: "read"}, "t2": nil},
		Revoked:   map[string]*Revocation{"m7": {Machine: "m7"}, "bad": {Machine: "bad", At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, "m8": nil},
		Epoch:     9,
	})
	if err == nil {
		t.Fatal("a batch with an unstorable revocation was stored")
	}
	if after, err := s.Load(); err != nil || !reflect.DeepEqual(after, before) {
		t.Fatalf("after the failed batch: %+v (%v), want %+v", after, err, before)
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

// TestBoltOpensOlderDatabase: a database without the tokens and revoked
// buckets opens, keeps its records, and stores tokens and revocations.
func TestBoltOpensOlderDatabase(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketInstances, bucketMachines, bucketMeta} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return put(tx.Bucket(bucketMachines), "m1", Machine{ID: "m1", Identity: "id1"})
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
	tok := Token{ID: "t1", Role: "read", SecretHash: "ef56"}
	if err := s.Commit(Batch{Tokens: map[string]*Token{"t1": &tok}, Revoked: map[string]*Revocation{"m2": {Machine: "m2"}}}); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load()
	if err != nil || len(snap.Machines) != 1 || !reflect.DeepEqual(snap.Tokens, []Token{tok}) || len(snap.Revoked) != 1 {
		t.Fatalf("older database: %+v (%v)", snap, err)
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
