// Package lanwire owns the LAN link protocol: the JSON frames a master and
// the LAN manager exchange over the WebSocket at /v1/link, the need and
// service-record types they share with the LAN manager's admin API and
// needs files, and the strict decoder both sides use for untrusted input.
//
// Every frame is one WebSocket text message holding an Envelope:
//
//	{"type":"grant","data":{"need":{"instance":"web1","module":"web"},"epoch":7}}
//
// Masters authenticate at the upgrade with "Authorization: Bearer <token>".
// Keep-alive uses WebSocket ping/pong control frames; a master's pings
// also renew its lease (see fencing.go).
//
// # Placement (link protocol 2)
//
// A master says which protocol it speaks in Hello.Protocol. With
// Placement, the LAN manager places needs: its hello (and later capacity
// frames) say which modules it runs and how many need children it takes;
// the LAN manager keeps pending needs in arrival order and grants each to
// the eligible master (module served, room left, machine constraint met,
// not declined there within the hold) with the fewest copies, ties to the
// one granted to least recently. The master runs the grant, or answers
// decline (see Decline) and the need goes elsewhere; spawn_failed, down
// and stop work as with any copy. It is sent no needs lists and sends no
// claims. A master that announces no protocol speaks the claims protocol
// of earlier masters (needs lists, claim, deny), kept so a LAN can be
// upgraded one machine at a time; a protocol above Placement is refused
// at hello.
//
// # Copies and epochs
//
// An instance has at most one copy on the LAN: the grant of its need to
// one master, from the grant until that master reports the copy gone or is
// fenced. Each grant carries an epoch that only grows; spawned,
// spawn_failed, down, stop and rejected name it, and a frame with a stale
// epoch is refused. A copy ends with exactly one of: spawn_failed or down
// (not restarting) from its master, a hello of that master that does not
// list it, or the master's fence (fencing.go).
package lanwire

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Path is the HTTP path of the link endpoint.
const Path = "/v1/link"

// LAN managers sharing etcd: a standby answers a link 503 with
// LeaderHeader naming the leader's URL. A master that cannot reach the
// leader itself dials the standby again with RelayHeader set, and the
// standby relays the link to the leader.
const (
	LeaderHeader = "X-Allex-Leader"
	RelayHeader  = "X-Allex-Relay"
	// RelayedMachineHeader names the machine whose certificate a standby
	// verified before relaying its link (or forwarding its renewal); the
	// leader believes it only from a LAN manager's certificate.
	RelayedMachineHeader = "X-Allex-Relayed-Machine"
)

// LeaderBase is the base URL (scheme and host) a LeaderHeader names, or
// "" unless it is a plain http(s) URL: no user, path or query.
func LeaderBase(h string) string {
	u, err := url.Parse(h)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// DefaultPort is the LAN manager's default listening port.
const DefaultPort = 23552

// MaxFrameSize bounds one frame; larger frames are refused unread.
const MaxFrameSize = 1 << 20

// Frame types sent by a master.
const (
	TypeHello       = "hello"        // Hello: first frame of every session
	TypeClaim       = "claim"        // Claim: bid for a need (claims protocol only)
	TypeSpawned     = "spawned"      // Spawned: child up, please check and publish
	TypeSpawnFailed = "spawn_failed" // SpawnFailed: a granted need could not start
	TypeDown        = "down"         // Down: a child of a need died or was stopped
	TypeCapacity    = "capacity"     // Capacity: free capacity changed
	TypeDecline     = "decline"      // Decline: a placed grant cannot run here now
)

// Frame types sent by the LAN manager.
const (
	TypeWelcome  = "welcome"  // Welcome: answer to hello
	TypeNeeds    = "needs"    // Needs: the needs this master may claim (claims protocol only)
	TypeGrant    = "grant"    // Grant: run the need (placed here, or the claim won)
	TypeDeny     = "deny"     // Deny: the claim lost or is not allowed (claims protocol only)
	TypeApproved = "approved" // Approved: ports reachable, service published
	TypeRejected = "rejected" // Rejected: port check failed; stop the child
	TypeStop     = "stop"     // Stop: the need is gone or owned elsewhere
	TypeError    = "error"    // Error: the previous frame was refused
)

// Envelope is the outer shape of every frame.
type Envelope struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
}

// Ports maps a protocol name ("tcp", "http", "ws") to a port.
type Ports map[string]uint16

// MachineConstraint pins a need to one machine id and/or to masters whose
// address is the given IP or inside the given CIDR.
type MachineConstraint struct {
	ID      string `json:"id,omitempty"`
	Address string `json:"address,omitempty"`
}

// Need is a service that should run somewhere on the LAN. The instance name
// is its key: at most one need and one service per instance.
type Need struct {
	Instance   string            `json:"instance"`
	Module     string            `json:"module"`
	Properties map[string]string `json:"properties,omitempty"`
	// Protocols the service wants a port for; none means the protocols
	// its module declares on the master that runs it.
	Protocols []string `json:"protocols,omitempty"`
	// FixedPorts pins ports by protocol; each must also be in Protocols
	// (CheckFixedPorts).
	FixedPorts Ports              `json:"fixedports,omitempty"`
	Machine    *MachineConstraint `json:"machine,omitempty"`
	// TimeoutMS bounds grant-to-spawned; 0 means DefaultNeedTimeout.
	TimeoutMS int64 `json:"timeoutms,omitempty"`
}

// CheckFixedPorts refuses a fixed port whose protocol is not listed in
// Protocols, Protocols left out included: a fixed port pins the port of a
// listed protocol. Admin API calls and needs files are held to it.
func (n Need) CheckFixedPorts() error {
	for _, proto := range slices.Sorted(maps.Keys(n.FixedPorts)) {
		if !slices.Contains(n.Protocols, proto) {
			listed := "none"
			if len(n.Protocols) > 0 {
				listed = strings.Join(n.Protocols, ",")
			}
			return fmt.Errorf("need %s: fixedports.%s: %s is not in protocols (%s); list it there too", n.Instance, proto, proto, listed)
		}
	}
	return nil
}

// DefaultNeedTimeout is how long a granted need may take to be spawned.
const DefaultNeedTimeout = 60 * time.Second

// Timeout returns the need's grant timeout.
func (n Need) Timeout() time.Duration {
	if n.TimeoutMS <= 0 {
		return DefaultNeedTimeout
	}
	return time.Duration(n.TimeoutMS) * time.Millisecond
}

// ServiceRecord is a published, reachable service.
type ServiceRecord struct {
	Instance  string `json:"instance"`
	Module    string `json:"module"`
	MachineID string `json:"machine"`
	// Epoch is the grant this copy runs under; consumers may use it as a
	// fencing token (a larger epoch is a later copy).
	Epoch       uint64            `json:"epoch"`
	Address     string            `json:"address"`
	Ports       Ports             `json:"ports,omitempty"`
	PID         int               `json:"pid"`
	Properties  map[string]string `json:"properties,omitempty"`
	StartedAt   time.Time         `json:"startedat"`
	PublishedAt time.Time         `json:"publishedat"`
}

// Capacity is what a master can still take on.
type Capacity struct {
	// MaxProcesses is the most need children the master runs; 0: unlimited.
	MaxProcesses int `json:"maxprocesses"`
	Running      int `json:"running"`
	// FreePorts per protocol in the master's port ranges.
	FreePorts map[string]int `json:"freeports,omitempty"`
}

// Full says whether the master takes no more need children; the LAN
// manager offers needs by it, and the master reports a change of it at
// once.
func (c Capacity) Full() bool { return c.MaxProcesses > 0 && c.Running >= c.MaxProcesses }

// RunningService is a copy a master holds, reported in Hello so the LAN
// manager can reconcile after a reconnect without restarting it. PID 0
// means the copy is starting or between two runs.
type RunningService struct {
	Instance  string    `json:"instance"`
	Module    string    `json:"module"`
	Epoch     uint64    `json:"epoch"`
	PID       int       `json:"pid"`
	Ports     Ports     `json:"ports,omitempty"`
	StartedAt time.Time `json:"startedat"`
}

// Hello introduces a master.
type Hello struct {
	MachineID string `json:"machine"`
	// Identity is random, made on the master's first start and kept in its
	// state dir: two masters given one machine id have two identities,
	// and the LAN manager lets only one of them be that machine.
	Identity string `json:"identity"`
	// Address other machines reach the master's children on.
	Address  string           `json:"address"`
	Modules  []string         `json:"modules"`
	Capacity Capacity         `json:"capacity"`
	Running  []RunningService `json:"running,omitempty"`
	Version  string           `json:"version,omitempty"`
	// Protocol is the link protocol the master speaks: Placement (the LAN
	// manager grants needs without claims) or, when absent, the claims
	// protocol of earlier masters.
	Protocol int `json:"protocol,omitempty"`
}

// Link protocols a master announces in Hello.Protocol.
const (
	// ProtocolClaims: the master is sent needs lists and claims from them
	// (masters that do not announce a protocol).
	ProtocolClaims = 1
	// Placement: the LAN manager picks the master and sends the grant; the
	// master runs it or declines it. No needs lists, claims or denies.
	Placement = 2
)

// Decline gives a placed grant back, nothing started: the master cannot
// run it now (module not here, full, draining, an earlier copy still
// stopping, a local process has the name), which is no failure, and the
// LAN manager places the need elsewhere and not on this master for a
// while; or, with Final, it can never run the need as it is (a protocol
// its module does not declare here), which counts as a failed attempt,
// and the need is not placed on this master again until it changes or
// the master says hello anew.
type Decline struct {
	Instance string `json:"instance"`
	Epoch    uint64 `json:"epoch"`
	Reason   string `json:"reason"`
	Final    bool   `json:"final,omitempty"`
}

// Claim bids for an unsatisfied need.
type Claim struct {
	Instance string `json:"instance"`
}

// Spawned reports a granted need's child is up on the given ports.
type Spawned struct {
	Instance  string    `json:"instance"`
	Epoch     uint64    `json:"epoch"`
	PID       int       `json:"pid"`
	Ports     Ports     `json:"ports,omitempty"`
	StartedAt time.Time `json:"startedat"`
}

// SpawnFailed gives a granted need back.
type SpawnFailed struct {
	Instance string `json:"instance"`
	Epoch    uint64 `json:"epoch"`
	Error    string `json:"error"`
}

// Down reports that a need child is gone: the copy ends, unless
// Restarting is set.
type Down struct {
	Instance string `json:"instance"`
	Epoch    uint64 `json:"epoch"`
	PID      int    `json:"pid"`
	ExitCode int    `json:"exitcode"`
	Signal   string `json:"signal,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Restarting says the master is starting the child again on this
	// machine, on the same ports: the record goes, but the need stays
	// granted to this master until it reports spawned again, gives the
	// need back (spawn_failed) or the grant times out.
	Restarting bool `json:"restarting,omitempty"`
}

// Welcome accepts a hello and announces the timings of fencing.go; the
// master's lease starts when it sent the hello.
type Welcome struct {
	SessionID string `json:"session"`
	Timings
}

// Needs lists every unsatisfied, ungranted need this master may claim now.
// It replaces the previous list.
type Needs struct {
	Needs []Need `json:"needs"`
}

// Grant gives a need to the master that claimed it, as a new copy.
type Grant struct {
	Need  Need   `json:"need"`
	Epoch uint64 `json:"epoch"`
}

// Deny refuses a claim.
type Deny struct {
	Instance string `json:"instance"`
	Reason   string `json:"reason"`
}

// Approved says the service was published.
type Approved struct {
	Service ServiceRecord `json:"service"`
}

// Rejected says the port check failed; the master stops the child and
// reports it down.
type Rejected struct {
	Instance string `json:"instance"`
	Epoch    uint64 `json:"epoch"`
	Reason   string `json:"reason"`
}

// Stop tells the master to stop the copy of that epoch and report it down
// (also when it no longer runs); a stop of another epoch is ignored.
type Stop struct {
	Instance string `json:"instance"`
	Epoch    uint64 `json:"epoch"`
	Reason   string `json:"reason"`
}

// Error answers a frame that was refused; the state is unchanged.
type Error struct {
	// Ref is the type of the refused frame, when it could be read.
	Ref     string `json:"ref,omitempty"`
	Message string `json:"message"`
}
