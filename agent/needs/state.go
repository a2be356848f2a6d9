// Package needs owns a master's side of the LAN's needs: the copies the
// LAN manager placed on it (or that it declined) (each under its epoch), what
// it reports about them, and its lease: the time until which the LAN
// manager counts on it, past which it fences itself by stopping every
// copy (lanwire/fencing.go). State is a pure state machine on a boot-time
// clock passed in with every event; Controller runs it on a goroutine of
// its own, fed by the link and the agent, and calls out to them.
package needs

import (
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/lanwire"
)

// capacityEvery is how often, at most, a capacity report goes out that
// does not change whether the machine is full. The LAN manager places by
// its own count of this master's copies; the running count it is sent
// only shows in its machines list, so it need not follow every start.
const capacityEvery = time.Second

// Config is what the controller knows of the master.
type Config struct {
	MachineID string
	Identity  string
	Address   string // "" lets the link fill in its local address
	Version   string
	// Modules this master can run.
	Modules []string
	// MaxProcesses is the most need children (0: unlimited).
	MaxProcesses int
	// Capacity is the agent's free capacity now.
	Capacity func() lanwire.Capacity
	// Busy says whether a child of that instance name runs on the agent.
	Busy func(instance string) bool
	// Check says why this master cannot run a need as it is (nil: it
	// can), e.g. a protocol its module does not declare here.
	Check  func(n lanwire.Need) error
	Logger hclog.Logger
}

// Effect kinds.
const (
	DoSend      = iota // send Type/Payload on the link
	DoStart            // start Need's child (a new copy under Epoch)
	DoStop             // stop Instance's child
	DoLease            // tell the keeper the lease ends at Until
	DoExitFence        // tell the keeper the exit fence is Duration
)

// Effect is one thing the controller must do, in order.
type Effect struct {
	Kind     int
	Type     string
	Payload  any
	Need     lanwire.Need
	Epoch    uint64
	Instance string
	Until    time.Duration
	Duration time.Duration
}

// copyState is a copy this master holds: granted, running, or stopping.
type copyState struct {
	need      lanwire.Need
	epoch     uint64
	ports     lanwire.Ports
	pid       int // current run; 0 between runs
	startedAt time.Time
	// up: the current run was reported spawned (a down is owed when it ends).
	up       bool
	stopping bool
	// exit is how the last run ended.
	exit ChildEvent
}

// State is the master's side of the LAN's needs.
type State struct {
	cfg     Config
	log     hclog.Logger
	modules map[string]bool

	connected bool
	// draining: the master is stopping; it takes nothing more.
	draining bool
	timings  lanwire.Timings
	// lease is when the LAN manager stops counting on this master (boot
	// time); 0 before the first welcome.
	lease time.Duration
	// fencedAt is the lease whose fence ran (its copies were told to stop).
	fencedAt time.Duration

	copies map[string]*copyState
	// running is the agent's count of live need children, from the last
	// capacity it reported.
	capLast  lanwire.Capacity
	capKnown bool
	capSent  time.Duration
	capDue   time.Duration // a catch-up report is due then; 0: none

	out []Effect
}

// NewState returns the state of a master that has not connected yet.
func NewState(cfg Config) *State {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Capacity == nil {
		cfg.Capacity = func() lanwire.Capacity { return lanwire.Capacity{MaxProcesses: cfg.MaxProcesses} }
	}
	if cfg.Busy == nil {
		cfg.Busy = func(string) bool { return false }
	}
	if cfg.Check == nil {
		cfg.Check = func(lanwire.Need) error { return nil }
	}
	s := &State{cfg: cfg, log: cfg.Logger, modules: map[string]bool{}, copies: map[string]*copyState{}}
	for _, m := range cfg.Modules {
		s.modules[m] = true
	}
	s.timings = lanwire.DefaultTimings()
	return s
}

// Take returns the effects of the events since the last call.
func (s *State) Take() []Effect {
	out := s.out
	s.out = nil
	return out
}

func (s *State) send(typ string, payload any) {
	s.out = append(s.out, Effect{Kind: DoSend, Type: typ, Payload: payload})
}

// HoldsCopies says whether any copy may still run here.
func (s *State) HoldsCopies() bool { return len(s.copies) > 0 }

// Lease returns when the lease ends (0: none yet).
func (s *State) Lease() time.Duration { return s.lease }

// Welcomed starts a session: the lease runs from when the hello was sent.
func (s *State) Welcomed(now time.Duration, w *lanwire.Welcome, helloSent time.Duration) {
	s.connected = true
	s.timings = w.Timings
	s.out = append(s.out, Effect{Kind: DoExitFence, Duration: w.ExitFence()})
	s.renew(helloSent)
}

// Renewed takes a pong to a ping sent at sent: the LAN manager heard the
// master then, so the lease runs from then.
func (s *State) Renewed(sent time.Duration) {
	if s.connected {
		s.renew(sent)
	}
}

func (s *State) renew(sent time.Duration) {
	if until := sent + s.timings.Lease(); until > s.lease {
		s.lease = until
		s.out = append(s.out, Effect{Kind: DoLease, Until: until})
	}
}

// Drain declines every later grant: the master is shutting down.
func (s *State) Drain() { s.draining = true }

// Disconnected ends the session. The lease runs on; the copies are fenced
// when it ends.
func (s *State) Disconnected() { s.connected = false }

// fenceAt is when the copies must start stopping so that they are dead,
// SIGKILL included, when the lease ends.
func (s *State) fenceAt() time.Duration { return s.lease - s.timings.FenceGrace() }

// Next returns when Tick has something to do (ok false: nothing).
func (s *State) Next() (t time.Duration, ok bool) {
	earliest := func(d time.Duration) {
		if !ok || d < t {
			t, ok = d, true
		}
	}
	if s.lease > 0 && s.fencedAt != s.lease && len(s.copies) > 0 {
		earliest(s.fenceAt())
	}
	if s.capDue > 0 {
		earliest(s.capDue)
	}
	return t, ok
}

// Tick does what is due: the fence, a capacity report.
func (s *State) Tick(now time.Duration) {
	if s.lease > 0 && s.fencedAt != s.lease && len(s.copies) > 0 && now >= s.fenceAt() {
		s.fence()
	}
	if s.capDue > 0 && now >= s.capDue {
		s.capDue = 0
		s.reportCapacity(now)
	}
}

// fence stops every copy: the LAN manager will count them gone when the
// lease ends, and the keeper kills what is left then.
func (s *State) fence() {
	s.fencedAt = s.lease
	s.log.Warn("LAN lease running out: stopping every LAN child (fence)", "copies", len(s.copies))
	for _, inst := range slices.Sorted(maps.Keys(s.copies)) {
		s.stop(inst, "fenced: the LAN manager has not answered for the lease")
	}
}

func (s *State) stop(inst, why string) {
	c := s.copies[inst]
	if c == nil || c.stopping {
		return
	}
	c.stopping = true
	s.log.Info("stopping LAN child", "instance", inst, "epoch", c.epoch, "why", why)
	s.out = append(s.out, Effect{Kind: DoStop, Instance: inst})
}

// reportCapacity keeps the LAN manager's view of this machine's load
// current. Whether the machine is full goes out at once; other changes at
// most every capacityEvery, the latest last.
func (s *State) reportCapacity(now time.Duration) {
	c := s.cfg.Capacity()
	if !s.connected || (s.capKnown && sameCapacity(c, s.capLast)) {
		return
	}
	if wait := s.capSent + capacityEvery - now; s.capKnown && c.Full() == s.capLast.Full() && wait > 0 {
		if s.capDue == 0 {
			s.capDue = now + wait
		}
		return
	}
	s.capSent, s.capLast, s.capKnown = now, c, true
	s.send(lanwire.TypeCapacity, &c)
}

func sameCapacity(a, b lanwire.Capacity) bool {
	return a.MaxProcesses == b.MaxProcesses && a.Running == b.Running && maps.Equal(a.FreePorts, b.FreePorts)
}
