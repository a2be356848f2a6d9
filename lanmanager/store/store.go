// Package store owns the LAN manager's durable state: the needs that should
// run and the services that do. Every mutation is one transaction, so a
// need becoming a service (or back) is never half done after a crash.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/allex-go/allex/lanwire"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Need is a stored need with its retry bookkeeping. Grants are not stored:
// they are only valid for the session that won them.
type Need struct {
	Need      lanwire.Need `json:"need"`
	Attempts  int          `json:"attempts"`
	NotBefore time.Time    `json:"notbefore,omitzero"`
	CreatedAt time.Time    `json:"createdat"`
	LastError string       `json:"lasterror,omitempty"`
	// Origin is "api" or "file:<path>".
	Origin string `json:"origin,omitempty"`
}

// Service is a published service together with the need it satisfies, so
// the need can be recreated exactly when the service goes down.
type Service struct {
	Record lanwire.ServiceRecord `json:"record"`
	Need   lanwire.Need          `json:"need"`
	Origin string                `json:"origin,omitempty"`
}

// Store is the LAN manager's persistence.
type Store interface {
	// Load returns every need and service, sorted by instance.
	Load() ([]Need, []Service, error)
	PutNeed(Need) error
	// PutNeeds stores several needs in one transaction: all or none.
	PutNeeds([]Need) error
	DeleteNeed(instance string) error
	PutService(Service) error
	DeleteService(instance string) error
	// Publish deletes the need and stores the service in one transaction.
	Publish(Service) error
	// Unpublish deletes the service and stores the need in one transaction.
	Unpublish(instance string, n Need) error
	Close() error
}

var (
	bucketNeeds    = []byte("needs")
	bucketServices = []byte("services")
)

// FileName is the database file name inside the data directory.
const FileName = "lanmanager.db"

// Bolt is the bbolt-backed Store.
type Bolt struct {
	db *bolt.DB
}

// OpenBolt opens (creating if needed) the database in dir. It fails within
// about a second if another process holds the database.
func OpenBolt(dir string) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("store %s is locked (is another LAN manager running on this data directory?): %w", path, err)
		}
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketNeeds, bucketServices} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store %s: create buckets: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Load implements Store.
func (b *Bolt) Load() ([]Need, []Service, error) {
	var needs []Need
	var svcs []Service
	err := b.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketNeeds).ForEach(func(k, v []byte) error {
			var n Need
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("need %q: %w", k, err)
			}
			needs = append(needs, n)
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketServices).ForEach(func(k, v []byte) error {
			var s Service
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("service %q: %w", k, err)
			}
			svcs = append(svcs, s)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store load: %w", err)
	}
	return needs, svcs, nil
}

func put(tx *bolt.Tx, bucket []byte, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), data)
}

func (b *Bolt) update(op string, fn func(tx *bolt.Tx) error) error {
	if err := b.db.Update(fn); err != nil {
		return fmt.Errorf("store %s: %w", op, err)
	}
	return nil
}

// PutNeed implements Store.
func (b *Bolt) PutNeed(n Need) error {
	return b.update("put need", func(tx *bolt.Tx) error { return put(tx, bucketNeeds, n.Need.Instance, n) })
}

// PutNeeds implements Store: one transaction (one fsync) for the batch.
func (b *Bolt) PutNeeds(ns []Need) error {
	return b.update("put needs", func(tx *bolt.Tx) error {
		for _, n := range ns {
			if err := put(tx, bucketNeeds, n.Need.Instance, n); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteNeed implements Store.
func (b *Bolt) DeleteNeed(instance string) error {
	return b.update("delete need", func(tx *bolt.Tx) error { return tx.Bucket(bucketNeeds).Delete([]byte(instance)) })
}

// PutService implements Store.
func (b *Bolt) PutService(s Service) error {
	return b.update("put service", func(tx *bolt.Tx) error { return put(tx, bucketServices, s.Record.Instance, s) })
}

// DeleteService implements Store.
func (b *Bolt) DeleteService(instance string) error {
	return b.update("delete service", func(tx *bolt.Tx) error { return tx.Bucket(bucketServices).Delete([]byte(instance)) })
}

// Publish implements Store.
func (b *Bolt) Publish(s Service) error {
	return b.update("publish", func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketNeeds).Delete([]byte(s.Record.Instance)); err != nil {
			return err
		}
		return put(tx, bucketServices, s.Record.Instance, s)
	})
}

// Unpublish implements Store.
func (b *Bolt) Unpublish(instance string, n Need) error {
	return b.update("unpublish", func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketServices).Delete([]byte(instance)); err != nil {
			return err
		}
		return put(tx, bucketNeeds, n.Need.Instance, n)
	})
}

// Close implements Store.
func (b *Bolt) Close() error { return b.db.Close() }

// Memory is a Store that forgets everything on exit (tests, -store memory).
type Memory struct {
	mu    sync.Mutex
	needs map[string]Need
	svcs  map[string]Service
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{needs: map[string]Need{}, svcs: map[string]Service{}}
}

// Load implements Store.
func (m *Memory) Load() ([]Need, []Service, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	needs := make([]Need, 0, len(m.needs))
	for _, n := range m.needs {
		needs = append(needs, n)
	}
	svcs := make([]Service, 0, len(m.svcs))
	for _, s := range m.svcs {
		svcs = append(svcs, s)
	}
	sort.Slice(needs, func(i, j int) bool { return needs[i].Need.Instance < needs[j].Need.Instance })
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Record.Instance < svcs[j].Record.Instance })
	return needs, svcs, nil
}

func (m *Memory) do(fn func()) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	fn()
	return nil
}

// PutNeed implements Store.
func (m *Memory) PutNeed(n Need) error { return m.do(func() { m.needs[n.Need.Instance] = n }) }

// PutNeeds implements Store.
func (m *Memory) PutNeeds(ns []Need) error {
	return m.do(func() {
		for _, n := range ns {
			m.needs[n.Need.Instance] = n
		}
	})
}

// DeleteNeed implements Store.
func (m *Memory) DeleteNeed(instance string) error {
	return m.do(func() { delete(m.needs, instance) })
}

// PutService implements Store.
func (m *Memory) PutService(s Service) error {
	return m.do(func() { m.svcs[s.Record.Instance] = s })
}

// DeleteService implements Store.
func (m *Memory) DeleteService(instance string) error {
	return m.do(func() { delete(m.svcs, instance) })
}

// Publish implements Store.
func (m *Memory) Publish(s Service) error {
	return m.do(func() {
		delete(m.needs, s.Record.Instance)
		m.svcs[s.Record.Instance] = s
	})
}

// Unpublish implements Store.
func (m *Memory) Unpublish(instance string, n Need) error {
	return m.do(func() {
		delete(m.svcs, instance)
		m.needs[n.Need.Instance] = n
	})
}

// Close implements Store.
func (m *Memory) Close() error { return nil }
