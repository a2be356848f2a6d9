// Package lanstate owns the LAN manager's decisions: the needs, the one
// copy each instance may have (its grant to a machine, with an epoch, and
// its service once published), the machines and their sessions, and the
// timers that fence a lost machine and retry failed needs. It is a pure
// state machine: events come in as method calls with the time they
// happen, and what must be done (store writes, frames to send, links to
// close, port checks, watch events) comes out as Effects. It starts no
// goroutine, takes no lock and reads no clock, so every timeline is a
// unit test; package lanmanager wraps it with sockets and a loop.
//
// The fencing rules it applies are those of lanwire/fencing.go.
package lanstate

import (
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// Config are the LAN manager's rules. Zero values take the defaults.
type Config struct {
	// Timings are announced to every master (lanwire.Timings).
	Timings lanwire.Timings
	// Margin is added to a lost machine's fence before its copies end.
	Margin time.Duration
	// RetryBackoffInitial and RetryBackoffMax bound the delay before a
	// failed need is offered again.
	RetryBackoffInitial, RetryBackoffMax time.Duration
	// CrashLoopLimit is how many times a need's service may go down within
	// CrashLoopWindow before it is offered again only after a backoff
	// (0: 10; negative: never back off).
	CrashLoopLimit  int
	CrashLoopWindow time.Duration
	// OfferWindow caps the needs one needs list carries (default 64).
	OfferWindow int
	// MaxPlacing caps the copies granted and not yet published (0:
	// DefaultMaxPlacing; negative: no cap).
	MaxPlacing int
	// DeclineHold is how long a need is not placed again on a master that
	// declined it (default DefaultDeclineHold).
	DeclineHold time.Duration
	// Jitter returns a delay in [d/2, d]; default random.
	Jitter func(d time.Duration) time.Duration
	Logger hclog.Logger
}

// DefaultOfferWindow is Config.OfferWindow's default.
const DefaultOfferWindow = 64

func (c *Config) setDefaults() {
	if c.Timings == (lanwire.Timings{}) {
		c.Timings = lanwire.DefaultTimings()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Margin < 0 {
		c.Margin = 0
	}
	def(&c.RetryBackoffInitial, time.Second)
	def(&c.RetryBackoffMax, time.Minute)
	def(&c.CrashLoopWindow, time.Minute)
	def(&c.DeclineHold, DefaultDeclineHold)
	c.RetryBackoffMax = max(c.RetryBackoffMax, c.RetryBackoffInitial)
	if c.CrashLoopLimit == 0 {
		c.CrashLoopLimit = 10
	}
	if c.MaxPlacing == 0 {
		c.MaxPlacing = DefaultMaxPlacing
	}
	if c.OfferWindow <= 0 {
		c.OfferWindow = DefaultOfferWindow
	}
	if c.Jitter == nil {
		c.Jitter = func(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
}

// SessionID names one link session; the caller makes them unique.
type SessionID string

// End is how a session ended, which decides when its machine's copies end.
type End int

const (
	// EndLease: silence, a close by the LAN manager, a CloseAlive from the
	// master, a network error: the copies end when the master's lease
	// surely has (heard + Lease + Margin).
	EndLease End = iota
	// EndVanished: the connection ended without a close frame, so the
	// master's process is gone and its keeper kills its children within
	// the exit fence.
	EndVanished
	// EndNoCopies: the master closed with CloseNoCopies.
	EndNoCopies
)

// Send is a frame for a session.
type Send struct {
	Session SessionID
	Type    string
	Payload any
}

// Close asks for a session's link to be closed with a close frame.
type Close struct {
	Session SessionID
	Code    int
	Reason  string
}

// Check asks for the ports of a spawned copy to be checked; the result
// comes back through CheckDone with ID.
type Check struct {
	ID       uint64
	Instance string
	Address  string
	Need     lanwire.Need
	Ports    lanwire.Ports
}

// Effects is what the caller must do after a batch of events, in this
// order: commit Store (nothing else may happen if that fails), then send,
// close, start checks and emit events.
type Effects struct {
	Store  store.Batch
	Sends  []Send
	Closes []Close
	Checks []Check
	Events []adminapi.ServiceEvent
}

// State is the LAN's state. Its methods must not be called concurrently.
type State struct {
	cfg Config
	log hclog.Logger

	insts    map[string]*inst
	sorted   []*inst // by name, for needs lists
	machines map[string]*machine
	sessions map[SessionID]*session
	// away holds the machines that may be away with copies; see
	// awayMachines.
	away  map[*machine]bool
	epoch uint64
	// downs holds, per instance, when its service went down within the
	// crash-loop window.
	downs   map[string][]time.Time
	checkID uint64

	fx         Effects
	dirty      map[string]bool // instances to store (deleted when gone)
	dirtyMach  map[string]bool
	linked     map[string]bool // Batch.Linked
	epochDirty bool
	offers     bool // needs lists or placements may have changed

	// groups hold the needs waiting for placement (queue.go): into is
	// the current request's, background the others'; turn is the group
	// the next pass starts with. placing holds the granted copies not yet
	// published, with their epochs; blocked says the last pass ran out of
	// room. byModule holds the placing sessions by module (place.go).
	groups     []*group
	into       *group
	background *group
	turn       *group
	placing    map[*inst]uint64
	blocked    bool
	byModule   map[string]*placeHeap
	grants     uint64
	timers     timerHeap
	// revoked holds the machines cut off for good (auth.go).
	revoked map[string]bool
}

// inst is an instance: its stored record and what is in flight.
type inst struct {
	rec store.Instance
	// checking is the id of the port check in flight (0: none), and
	// spawn the report it checks.
	checking uint64
	spawn    lanwire.Spawned
	// queued: in State.queue. declined holds, by machine, until when it
	// declined this need.
	queued   bool
	declined map[string]time.Time
	// waited is the NotBefore whose end Tick has seen; sched the
	// deadline in the timer heap, if scheduled.
	waited    time.Time
	sched     time.Time
	scheduled bool
}

func (i *inst) name() string { return i.rec.Need.Instance }

// machine is a master known by id: connected, or away until its copies end.
type machine struct {
	id, identity, address string
	stored                store.Machine // what the store has; zero: nothing
	sess                  *session
	// endsAt is when the copies of an away machine end (State.away).
	endsAt   time.Time
	lastSeen time.Time
	capacity lanwire.Capacity
	copies   map[string]*inst
}

type session struct {
	id        SessionID
	m         *machine
	modules   map[string]bool
	lastOffer string
	offered   bool
	// placement: the master speaks lanwire.Placement and is granted
	// needs without needs lists; idx is its place in each module heap.
	placement bool
	idx       map[string]int
	lastGrant uint64
}

// FileNeed is a need from a needs file, with its origin ("file:<path>").
type FileNeed struct {
	Need   lanwire.Need
	Origin string
}

// New restores the state from the store and merges the needs files (see
// mergeFiles). Every machine that holds copies gets Lease + Margin from now
// to come back before its copies end: this LAN manager cannot know when it
// last heard from it.
func New(cfg Config, snap store.Snapshot, files []FileNeed, now time.Time) *State {
	cfg.setDefaults()
	s := &State{
		cfg: cfg, log: cfg.Logger,
		insts: map[string]*inst{}, machines: map[string]*machine{}, sessions: map[SessionID]*session{},
		downs: map[string][]time.Time{}, dirty: map[string]bool{}, dirtyMach: map[string]bool{}, byModule: map[string]*placeHeap{},
		placing: map[*inst]uint64{}, away: map[*machine]bool{}, epoch: snap.Epoch,
	}
	s.revoked = make(map[string]bool, len(snap.Revoked))
	for _, r := range snap.Revoked {
		s.revoked[r.Machine] = true
	}
	for _, m := range snap.Machines {
		s.machines[m.ID] = &machine{id: m.ID, identity: m.Identity, address: m.Address, stored: m, copies: map[string]*inst{}}
	}
	for _, rec := range snap.Instances {
		i := &inst{rec: rec}
		s.insts[rec.Need.Instance] = i
		if c := rec.Copy; c != nil {
			s.machineFor(c.Machine).copies[rec.Need.Instance] = i
			s.epoch = max(s.epoch, c.Epoch)
		}
	}
	s.rebuildSorted()
	for _, i := range s.sorted {
		if i.rec.Copy == nil && !i.rec.Removed {
			s.enqueue(i)
		}
		s.schedule(i)
	}
	for _, m := range s.machines {
		if len(m.copies) == 0 {
			s.dropMachine(m)
			continue
		}
		m.endsAt = now.Add(cfg.Timings.Lease() + cfg.Margin)
		s.away[m] = true
	}
	s.mergeFiles(files, now)
	s.offers = true
	return s
}

func (s *State) machineFor(id string) *machine {
	m := s.machines[id]
	if m == nil {
		m = &machine{id: id, copies: map[string]*inst{}}
		s.machines[id] = m
	}
	return m
}

// dropMachine forgets a machine that has neither a session nor copies.
func (s *State) dropMachine(m *machine) {
	delete(s.machines, m.id)
	if m.stored != (store.Machine{}) {
		s.dirtyMach[m.id] = true
	}
}

func (s *State) rebuildSorted() {
	s.sorted = s.sorted[:0]
	for _, i := range s.insts {
		s.sorted = append(s.sorted, i)
	}
	slices.SortFunc(s.sorted, func(a, b *inst) int { return strings.Compare(a.name(), b.name()) })
}

func byName(i *inst, name string) int { return strings.Compare(i.name(), name) }

func (s *State) addInst(i *inst) {
	s.insts[i.name()] = i
	if k, found := slices.BinarySearchFunc(s.sorted, i.name(), byName); found {
		s.sorted[k] = i
	} else {
		s.sorted = slices.Insert(s.sorted, k, i)
	}
	s.touch(i)
}

func (s *State) deleteInst(i *inst) {
	delete(s.insts, i.name())
	if k, found := slices.BinarySearchFunc(s.sorted, i.name(), byName); found {
		s.sorted = slices.Delete(s.sorted, k, k+1)
	}
	s.dirty[i.name()] = true
	s.offers = true
}

// touch marks an instance for the next store batch; its timer may have
// changed too.
func (s *State) touch(i *inst) {
	s.dirty[i.name()] = true
	s.schedule(i)
}

func (s *State) send(sess *session, typ string, payload any) {
	if sess != nil {
		s.fx.Sends = append(s.fx.Sends, Send{Session: sess.id, Type: typ, Payload: payload})
	}
}

func (s *State) sendTo(m *machine, typ string, payload any) {
	if m != nil {
		s.send(m.sess, typ, payload)
	}
}

func (s *State) emit(typ string, rec lanwire.ServiceRecord) {
	s.fx.Events = append(s.fx.Events, adminapi.ServiceEvent{Type: typ, Service: rec})
}

// PendingEvents counts the watch events of the batch so far.
func (s *State) PendingEvents() int { return len(s.fx.Events) }

// TakeEffects returns what the events since the last call require, with
// the needs lists that changed, and starts a new batch.
func (s *State) TakeEffects(now time.Time) Effects {
	if s.offers || s.blocked {
		s.place(now)
		s.sendOffers(now)
		s.offers = false
	}
	fx := s.fx
	s.fx = Effects{}
	if len(s.dirty) > 0 {
		fx.Store.Instances = make(map[string]*store.Instance, len(s.dirty))
		for name := range s.dirty {
			var rec *store.Instance
			if i := s.insts[name]; i != nil {
				r := i.rec.Clone()
				rec = &r
			}
			fx.Store.Instances[name] = rec
		}
		clear(s.dirty)
	}
	if len(s.dirtyMach) > 0 {
		fx.Store.Machines = make(map[string]*store.Machine, len(s.dirtyMach))
		for id := range s.dirtyMach {
			var rec *store.Machine
			if m := s.machines[id]; m != nil {
				r := m.stored
				rec = &r
			}
			fx.Store.Machines[id] = rec
		}
		clear(s.dirtyMach)
	}
	if s.epochDirty {
		fx.Store.Epoch = s.epoch
		s.epochDirty = false
	}
	if len(s.linked) > 0 {
		fx.Store.Linked, s.linked = s.linked, nil
	}
	return fx
}

// link records that machine id's link began or ended (Batch.Linked).
func (s *State) link(id string, up bool) {
	if s.linked == nil {
		s.linked = map[string]bool{}
	}
	s.linked[id] = up
}

// Next returns when Tick next has something to do; ok is false when no
// timer runs.
func (s *State) Next() (t time.Time, ok bool) {
	earliest := func(d time.Time) {
		if !ok || d.Before(t) {
			t, ok = d, true
		}
	}
	for _, m := range s.awayMachines() {
		earliest(m.endsAt)
	}
	if d, has := s.nextTimer(); has {
		earliest(d)
	}
	return t, ok
}

// awayMachines returns the machines without a session whose copies end
// at their endsAt. Machines join s.away when they get an endsAt and leave
// it here once they came back or were dropped, so that Next and Tick do
// not look at every machine.
func (s *State) awayMachines() []*machine {
	var out []*machine
	for m := range s.away {
		if m.sess != nil || m.endsAt.IsZero() || s.machines[m.id] != m {
			delete(s.away, m)
			continue
		}
		out = append(out, m)
	}
	return out
}

// grantDeadline is when a granted copy must have been reported spawned,
// for a copy on a connected machine with no port check running.
func (s *State) grantDeadline(i *inst) (time.Time, bool) {
	c := i.rec.Copy
	if c == nil || c.Phase != store.PhaseGranted || i.checking != 0 {
		return time.Time{}, false
	}
	if m := s.machines[c.Machine]; m == nil || m.sess == nil {
		return time.Time{}, false
	}
	return c.GrantedAt.Add(i.rec.Need.Timeout()), true
}

// Tick does what is due at now: fences machines whose copies end, stops
// copies whose grant expired, and offers needs whose backoff ended.
func (s *State) Tick(now time.Time) {
	for _, m := range s.awayMachines() {
		if !now.Before(m.endsAt) {
			s.fence(m, now, "its master was lost and is fenced")
		}
	}
	for _, i := range s.dueTimers(now) {
		s.tickInst(i, now)
	}
}

// backoff is the jittered delay before attempt n+1.
func (s *State) backoff(attempts int) time.Duration {
	d := s.cfg.RetryBackoffInitial
	for n := 1; n < attempts && d < s.cfg.RetryBackoffMax; n++ {
		d *= 2
	}
	return s.cfg.Jitter(min(d, s.cfg.RetryBackoffMax))
}

// fail counts a failed attempt: the need waits a backoff once its copy ends.
func (s *State) fail(i *inst, now time.Time, reason string) {
	i.rec.Attempts++
	i.rec.NotBefore = now.Add(s.backoff(i.rec.Attempts))
	i.rec.LastError = reason
	s.touch(i)
	s.log.Warn("need failed, backing off", "instance", i.name(), "attempts", i.rec.Attempts, "until", i.rec.NotBefore, "reason", reason)
}
