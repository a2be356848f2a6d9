package lanwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Fencing: how "at most one live copy" holds when masters die, hang or are
// cut off. The LAN manager announces Timings in every welcome; the master
// obeys them, its keeper enforces them (even when the master is frozen or
// dead), and the LAN manager waits them out, plus Margin, before it
// offers a lost master's needs to anyone else.
//
//	master                                         LAN manager
//	ping, payload = PingPayload(sent)  ──────────▶  heard = arrival
//	lease = sent + Lease              ◀──────────  pong (only while the session is live)
//	at lease − FenceGrace: stop LAN children (SIGTERM)
//	at lease: keeper SIGKILLs what is left
//	master process ends: keeper kills them by end + ExitFence
//
// When a session ends the LAN manager counts from its last heard time:
//
//   - closed by the master with CloseNoCopies: the copies end now;
//   - closed without a close frame (CloseAbnormal, a reset): the
//     master's process is gone, so its copies end at
//     min(heard+Lease, end+ExitFence) + Margin;
//   - anything else (silence for 3 heartbeats, CloseAlive, a close by the
//     LAN manager, a network error): heard + Lease + Margin.
//
// A LAN manager that starts gives every machine that holds copies
// start + Lease + Margin. Until a machine's copies end they stay its own
// (published services stay published, granted needs are not offered); then
// its services go down and its needs are offered again. A master closes
// its link itself only with a close frame: CloseNoCopies once it runs no
// copy, CloseAlive otherwise, and when even that frame cannot be written it
// holds the connection open until it has fenced.

// Timings are the fencing times a welcome announces.
type Timings struct {
	// HeartbeatMS is the ping period; either side drops a link silent for
	// three of them.
	HeartbeatMS int64 `json:"heartbeatms"`
	// LeaseMS: a master's LAN children are dead LeaseMS after it sent the
	// last ping the LAN manager answered (or the hello, for a new session).
	LeaseMS int64 `json:"leasems"`
	// FenceGraceMS: the master starts stopping them this long before its
	// lease ends, so they get SIGTERM and a grace before the SIGKILL.
	FenceGraceMS int64 `json:"fencegracems"`
	// ExitFenceMS: when the master's process ends, its keeper kills its
	// LAN children within this.
	ExitFenceMS int64 `json:"exitfencems"`
}

// Default timings (the LAN manager's; each is configurable there).
const (
	DefaultHeartbeat  = time.Second
	DefaultLease      = 10 * time.Second
	DefaultFenceGrace = 3 * time.Second
	DefaultExitFence  = 2 * time.Second
	// DefaultMargin is what the LAN manager adds before it re-offers: the
	// keeper's kill, its scheduling and the two clocks' rates.
	DefaultMargin = time.Second
)

// DefaultTimings are the timings a master assumes before its first welcome.
func DefaultTimings() Timings {
	return NewTimings(DefaultHeartbeat, DefaultLease, DefaultFenceGrace, DefaultExitFence)
}

// NewTimings builds Timings from durations.
func NewTimings(heartbeat, lease, fenceGrace, exitFence time.Duration) Timings {
	return Timings{
		HeartbeatMS:  heartbeat.Milliseconds(),
		LeaseMS:      lease.Milliseconds(),
		FenceGraceMS: fenceGrace.Milliseconds(),
		ExitFenceMS:  exitFence.Milliseconds(),
	}
}

// Heartbeat, Lease, FenceGrace and ExitFence return the timings as durations.
func (t Timings) Heartbeat() time.Duration  { return time.Duration(t.HeartbeatMS) * time.Millisecond }
func (t Timings) Lease() time.Duration      { return time.Duration(t.LeaseMS) * time.Millisecond }
func (t Timings) FenceGrace() time.Duration { return time.Duration(t.FenceGraceMS) * time.Millisecond }
func (t Timings) ExitFence() time.Duration  { return time.Duration(t.ExitFenceMS) * time.Millisecond }

// Validate checks that the timings can be obeyed: a lease outlives a lost
// ping, and the fence grace fits in the lease.
func (t Timings) Validate() error {
	switch {
	case t.HeartbeatMS < 10:
		return fmt.Errorf("heartbeat %v: want at least 10ms", t.Heartbeat())
	case t.LeaseMS < 2*t.HeartbeatMS:
		return fmt.Errorf("lease %v: want at least two heartbeats (%v)", t.Lease(), 2*t.Heartbeat())
	case t.FenceGraceMS < 0 || t.FenceGraceMS >= t.LeaseMS:
		return fmt.Errorf("fence grace %v: want 0 or more and less than the lease (%v)", t.FenceGrace(), t.Lease())
	case t.ExitFenceMS <= 0:
		return fmt.Errorf("exit fence %v: want more than 0", t.ExitFence())
	case t.LeaseMS > int64(time.Hour/time.Millisecond) || t.ExitFenceMS > t.LeaseMS:
		return fmt.Errorf("lease %v, exit fence %v: want a lease of at most 1h and an exit fence no longer than it", t.Lease(), t.ExitFence())
	}
	return nil
}

// Validate checks a welcome.
func (w *Welcome) Validate() error {
	if w.SessionID == "" {
		return errors.New("no session id")
	}
	return w.Timings.Validate()
}

// Close codes a master sends when it closes its link itself. The LAN
// manager reads a close without a close frame (CloseAbnormal, which the
// WebSocket library reports for a bare TCP end, or a reset) as the
// master's process gone.
const (
	// CloseNoCopies: the master runs no copy (it stopped or fenced them).
	CloseNoCopies = 4000
	// CloseAlive: the master lives on and may run copies; count its lease.
	CloseAlive = 4001
	// CloseRefused: the LAN manager refused the hello (see the error frame).
	CloseRefused = 4002
	// CloseReplaced: a newer session of the same master took over.
	CloseReplaced = 4003
	// CloseAbnormal is RFC 6455's 1006: the connection ended without a
	// close frame.
	CloseAbnormal = 1006
)

// PingPayload is the payload of a master's ping: when it was sent, on the
// master's boot-time clock. The LAN manager's pong echoes it, so the
// master knows which ping was answered and renews its lease from the send
// time, never from the (later, possibly delayed) arrival of the pong.
func PingPayload(sent time.Duration) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(sent))
}

// ParsePingPayload reads PingPayload back; ok is false for any other data.
func ParsePingPayload(b []byte) (sent time.Duration, ok bool) {
	if len(b) != 8 {
		return 0, false
	}
	v := binary.BigEndian.Uint64(b)
	if v > 1<<62 {
		return 0, false
	}
	return time.Duration(v), true
}
