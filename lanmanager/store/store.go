// Package store owns the LAN manager's durable state: one record per
// instance (its need and its copy: the grant, with its epoch and machine,
// and the service once published), the identities of the machines that
// hold copies, the bearer tokens (hashed), the revoked machines, and the
// epoch counter. A Batch is one transaction, so a grant or a publication
// is never half stored, and a grant is on disk before the master hears
// of it.
package store

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/allex-go/allex/lanwire"
)

// Copy phases.
const (
	PhaseGranted   = "granted"   // the master was told to run it
	PhasePublished = "published" // its ports answered; Service is set
	PhaseStopping  = "stopping"  // the master was told to stop it
)

// Instance is everything kept about one instance name.
type Instance struct {
	Need lanwire.Need `json:"need"`
	// Removed: the need is gone; the record stays until its copy has
	// stopped, so that the instance is not started again meanwhile.
	Removed   bool      `json:"removed,omitempty"`
	Origin    string    `json:"origin,omitempty"` // "api" or "file:<path>"
	CreatedAt time.Time `json:"createdat"`
	Attempts  int       `json:"attempts,omitempty"`
	NotBefore time.Time `json:"notbefore,omitzero"`
	LastError string    `json:"lasterror,omitempty"`
	Copy      *Copy     `json:"copy,omitempty"`
}

// Copy is the one grant of an instance's need to a machine.
type Copy struct {
	Machine   string                 `json:"machine"`
	Epoch     uint64                 `json:"epoch"`
	Phase     string                 `json:"phase"`
	GrantedAt time.Time              `json:"grantedat"`
	Service   *lanwire.ServiceRecord `json:"service,omitempty"`
}

// Clone returns a deep copy, so a stored record never aliases the caller's.
func (i Instance) Clone() Instance {
	i.Need = cloneNeed(i.Need)
	if i.Copy != nil {
		c := *i.Copy
		if c.Service != nil {
			s := *c.Service
			s.Ports = maps.Clone(s.Ports)
			s.Properties = maps.Clone(s.Properties)
			c.Service = &s
		}
		i.Copy = &c
	}
	return i
}

func cloneNeed(n lanwire.Need) lanwire.Need {
	n.Properties = maps.Clone(n.Properties)
	n.Protocols = slices.Clone(n.Protocols)
	n.FixedPorts = maps.Clone(n.FixedPorts)
	if n.Machine != nil {
		m := *n.Machine
		n.Machine = &m
	}
	return n
}

// Machine is a master that holds copies: its identity decides who may be
// that machine after a restart of the LAN manager.
type Machine struct {
	ID       string `json:"id"`
	Identity string `json:"identity"`
	Address  string `json:"address,omitempty"`
}

// Token is a bearer token's record. The secret is never stored, only its SHA-256 (hex).
type Token struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"` // "master" (join only), "admin", "read"
	SecretHash  string    `json:"secrethash"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdat"`
	Expires     time.Time `json:"expires,omitzero"` // zero: never
}

// Revocation cuts a machine off for good: its certificate and any new one for its id are refused.
type Revocation struct {
	Machine string    `json:"machine"`
	At      time.Time `json:"at"`
	Reason  string    `json:"reason,omitempty"`
}

// Snapshot is everything stored.
type Snapshot struct {
	Instances []Instance   // sorted by need instance
	Machines  []Machine    // sorted by id
	Tokens    []Token      // sorted by id
	Revoked   []Revocation // sorted by machine
	Epoch     uint64       // the last epoch handed out
}

// Batch is one transaction. A nil value in a map deletes the key.
type Batch struct {
	Instances map[string]*Instance
	Machines  map[string]*Machine
	Tokens    map[string]*Token      // by id
	Revoked   map[string]*Revocation // by machine
	Epoch     uint64                 // 0: unchanged
	// Linked holds the machines whose link to this LAN manager began
	// (true) or ended (false) since the last batch. A store that ties
	// services to their machine's liveness (Etcd) keeps a machine's
	// session alive while it is linked; the others ignore it.
	Linked map[string]bool
}

// Empty says whether the batch changes nothing.
func (b Batch) Empty() bool {
	return len(b.Instances) == 0 && len(b.Machines) == 0 && len(b.Tokens) == 0 && len(b.Revoked) == 0 &&
		b.Epoch == 0 && len(b.Linked) == 0
}

// Store is the LAN manager's persistence.
type Store interface {
	Load() (Snapshot, error)
	// Commit applies the batch in one transaction: all or nothing.
	Commit(Batch) error
	Close() error
}

// Memory is a Store that forgets everything on exit (tests, -store memory).
type Memory struct {
	mu        sync.Mutex
	instances map[string]Instance
	machines  map[string]Machine
	tokens    map[string]Token
	revoked   map[string]Revocation
	epoch     uint64
	// Fail, when set, makes Commit fail with its result (tests).
	Fail func(Batch) error
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{instances: map[string]Instance{}, machines: map[string]Machine{},
		tokens: map[string]Token{}, revoked: map[string]Revocation{}}
}

// Load implements Store.
func (m *Memory) Load() (Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var s Snapshot
	for _, k := range slices.Sorted(maps.Keys(m.instances)) {
		s.Instances = append(s.Instances, m.instances[k].Clone())
	}
	s.Machines = inKeyOrder(m.machines)
	s.Tokens = inKeyOrder(m.tokens)
	s.Revoked = inKeyOrder(m.revoked)
	s.Epoch = m.epoch
	return s, nil
}

// Commit implements Store.
func (m *Memory) Commit(b Batch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Fail != nil {
		if err := m.Fail(b); err != nil {
			return err
		}
	}
	for k, v := range b.Instances {
		if v == nil {
			delete(m.instances, k)
		} else {
			m.instances[k] = v.Clone()
		}
	}
	apply(m.machines, b.Machines)
	apply(m.tokens, b.Tokens)
	apply(m.revoked, b.Revoked)
	if b.Epoch != 0 {
		m.epoch = b.Epoch
	}
	return nil
}

// Close implements Store.
func (m *Memory) Close() error { return nil }

// inKeyOrder lists m's values by key (nil when empty, as the other stores load it).
func inKeyOrder[V any](m map[string]V) []V {
	var out []V
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}

// apply stores the records of a batch's map in dst, deleting the nil ones.
func apply[V any](dst map[string]V, src map[string]*V) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
		} else {
			dst[k] = *v
		}
	}
}

func sortInstances(xs []Instance) {
	slices.SortFunc(xs, func(a, b Instance) int { return strings.Compare(a.Need.Instance, b.Need.Instance) })
}
