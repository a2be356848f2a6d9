package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/allex-go/allex/lanwire"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	bucketInstances = []byte("instances")
	bucketMachines  = []byte("machines")
	bucketTokens    = []byte("tokens")
	bucketRevoked   = []byte("revoked")
	bucketMeta      = []byte("meta")
	keyEpoch        = []byte("epoch")

	// Buckets of the LAN managers before copies and epochs; OpenBolt
	// migrates them.
	legacyNeeds    = []byte("needs")
	legacyServices = []byte("services")
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
		// Created when missing: a database of an older LAN manager opens.
		for _, b := range [][]byte{bucketInstances, bucketMachines, bucketTokens, bucketRevoked, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return migrate(tx)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Load implements Store.
func (b *Bolt) Load() (Snapshot, error) {
	var s Snapshot
	err := b.db.View(func(tx *bolt.Tx) error {
		err := errors.Join(
			loadBucket(tx, bucketInstances, &s.Instances),
			loadBucket(tx, bucketMachines, &s.Machines),
			loadBucket(tx, bucketTokens, &s.Tokens),
			loadBucket(tx, bucketRevoked, &s.Revoked))
		s.Epoch = readEpoch(tx)
		return err
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("store load: %w", err)
	}
	sortInstances(s.Instances)
	return s, nil
}

// loadBucket appends the records of bucket name to out, in key order.
func loadBucket[V any](tx *bolt.Tx, name []byte, out *[]V) error {
	return tx.Bucket(name).ForEach(func(k, v []byte) error {
		var rec V
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("%s %q: %w", name, k, err)
		}
		*out = append(*out, rec)
		return nil
	})
}

func readEpoch(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyEpoch); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func put(bk *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return bk.Put([]byte(key), data)
}

// Commit implements Store: one transaction, one sync.
func (b *Bolt) Commit(batch Batch) error {
	if batch.Empty() {
		return nil
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		// Any error rolls the whole transaction back.
		if err := errors.Join(
			storeBucket(tx, bucketInstances, batch.Instances),
			storeBucket(tx, bucketMachines, batch.Machines),
			storeBucket(tx, bucketTokens, batch.Tokens),
			storeBucket(tx, bucketRevoked, batch.Revoked)); err != nil {
			return err
		}
		if batch.Epoch != 0 {
			return tx.Bucket(bucketMeta).Put(keyEpoch, binary.BigEndian.AppendUint64(nil, batch.Epoch))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store commit: %w", err)
	}
	return nil
}

// storeBucket writes the records of m to bucket name, deleting the nil ones.
func storeBucket[V any](tx *bolt.Tx, name []byte, m map[string]*V) error {
	bk := tx.Bucket(name)
	for k, v := range m {
		var err error
		if v == nil {
			err = bk.Delete([]byte(k))
		} else {
			err = put(bk, k, v)
		}
		if err != nil {
			return fmt.Errorf("%s %q: %w", name, k, err)
		}
	}
	return nil
}

// Close implements Store.
func (b *Bolt) Close() error { return b.db.Close() }

// legacyNeed and legacyService are the records of the old buckets.
type legacyNeed struct {
	Need      lanwire.Need `json:"need"`
	Attempts  int          `json:"attempts"`
	NotBefore time.Time    `json:"notbefore,omitzero"`
	CreatedAt time.Time    `json:"createdat"`
	LastError string       `json:"lasterror,omitempty"`
	Origin    string       `json:"origin,omitempty"`
}

type legacyService struct {
	Record lanwire.ServiceRecord `json:"record"`
	Need   lanwire.Need          `json:"need"`
	Origin string                `json:"origin,omitempty"`
}

// migrate moves the needs and services of an older LAN manager into
// instance records. Each published service becomes a copy with an epoch
// of its own; its machine has no identity yet, so the first master to say
// hello as that machine becomes it.
func migrate(tx *bolt.Tx) error {
	needs, svcs := tx.Bucket(legacyNeeds), tx.Bucket(legacyServices)
	if needs == nil && svcs == nil {
		return nil
	}
	ins := tx.Bucket(bucketInstances)
	epoch := readEpoch(tx)
	if needs != nil {
		if err := needs.ForEach(func(k, v []byte) error {
			var n legacyNeed
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("migrate need %q: %w", k, err)
			}
			return put(ins, n.Need.Instance, Instance{Need: n.Need, Origin: n.Origin, CreatedAt: n.CreatedAt,
				Attempts: n.Attempts, NotBefore: n.NotBefore, LastError: n.LastError})
		}); err != nil {
			return err
		}
	}
	if svcs != nil {
		if err := svcs.ForEach(func(k, v []byte) error {
			var s legacyService
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("migrate service %q: %w", k, err)
			}
			epoch++
			rec := s.Record
			rec.Epoch = epoch
			return put(ins, rec.Instance, Instance{Need: s.Need, Origin: s.Origin, CreatedAt: rec.PublishedAt,
				Copy: &Copy{Machine: rec.MachineID, Epoch: epoch, Phase: PhasePublished, GrantedAt: rec.PublishedAt, Service: &rec}})
		}); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketMeta).Put(keyEpoch, binary.BigEndian.AppendUint64(nil, epoch)); err != nil {
		return err
	}
	for _, b := range [][]byte{legacyNeeds, legacyServices} {
		if tx.Bucket(b) != nil {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
	}
	return nil
}
