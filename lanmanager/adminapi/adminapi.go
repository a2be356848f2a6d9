// Package adminapi owns the JSON types and error kinds of the LAN manager's
// admin HTTP API, shared by the server (lanmanager) and its Go client
// (lanmanager/adminclient) so the two cannot drift apart.
package adminapi

import (
	"errors"
	"time"

	"github.com/allex-go/allex/lanwire"
)

// Need states reported in NeedStatus.State.
const (
	StatePending   = "pending"   // waiting for a master to claim it
	StateGranted   = "granted"   // a master won the claim and is spawning it
	StateSatisfied = "satisfied" // a published service runs for it
	StateStopping  = "stopping"  // its copy was told to stop and has not confirmed yet
)

// Service event types.
const (
	EventUp   = "up"
	EventDown = "down"
)

// Error kinds; the server maps them to HTTP statuses and the client maps
// statuses back, so errors.Is works on both sides of the wire.
var (
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrUnauthorized = errors.New("unauthorized")
	ErrInvalid      = errors.New("invalid request")
	// ErrCompacted: a watch asked to resume from a revision the store
	// no longer keeps; watch again from the start.
	ErrCompacted = errors.New("revision compacted")
)

// NeedStatus is one need and where it stands.
type NeedStatus struct {
	Need    lanwire.Need `json:"need"`
	State   string       `json:"state"`
	Machine string       `json:"machine,omitempty"`
	// Epoch is the grant of the copy, when there is one.
	Epoch uint64 `json:"epoch,omitempty"`
	// Removed: the need was removed; it is listed until its copy stopped.
	Removed   bool      `json:"removed,omitempty"`
	Attempts  int       `json:"attempts"`
	NotBefore time.Time `json:"notbefore,omitzero"`
	LastError string    `json:"lasterror,omitempty"`
	// Origin is "api" or "file:<path>" (needs files are merged declaratively).
	Origin string `json:"origin,omitempty"`
}

// ServiceEvent is one line of the /v1/services/watch stream.
type ServiceEvent struct {
	Type    string                `json:"type"`
	Service lanwire.ServiceRecord `json:"service"`
	// Revision is the store revision of the event (LAN managers on etcd):
	// watching again with ?since=<revision> resumes after it. The
	// current services that open a stream carry the revision they were
	// read at.
	Revision int64 `json:"revision,omitempty"`
}

// MachineInfo describes a master known to the LAN manager: connected, or
// away while its copies are still its own.
type MachineInfo struct {
	ID string `json:"id"`
	// Identity is the start of the master's identity (its state dir's).
	Identity  string           `json:"identity,omitempty"`
	Address   string           `json:"address,omitempty"`
	Connected bool             `json:"connected"`
	Capacity  lanwire.Capacity `json:"capacity"`
	Services  int              `json:"services"`
	// Copies counts its copies: granted, published or stopping.
	Copies   int       `json:"copies"`
	LastSeen time.Time `json:"lastseen,omitzero"`
	// CopiesEndAt is when an away machine's copies end (its fence).
	CopiesEndAt time.Time `json:"copiesendat,omitzero"`
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
}
