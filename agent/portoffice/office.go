package portoffice

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/lanwire"
)

// Errors returned (wrapped) by the office.
var (
	ErrExhausted       = errors.New("port range exhausted")
	ErrUnknownProtocol = errors.New("unknown protocol")
	ErrInUse           = errors.New("port in use")
	ErrNotHeld         = errors.New("port not held")
)

// Range is an inclusive range of ports.
type Range struct{ Start, End uint16 }

func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Start, r.End) }

func (r Range) contains(p uint16) bool { return p >= r.Start && p <= r.End }

// Usage is one protocol's range and how many of its ports are held.
type Usage struct {
	Protocol   string
	Start, End uint16
	InUse      int
}

// Free is how many ports of the range nobody holds.
func (u Usage) Free() int { return int(u.End) - int(u.Start) + 1 - u.InUse }

// Option configures an Office.
type Option func(*Office)

// WithBindHost sets the host the "is another program listening" check
// binds on. The default "" binds the wildcard address (dual stack [::]
// where IPv6 exists), which on Linux also collides with a listener on any
// single local address such as 127.0.0.1.
func WithBindHost(host string) Option { return func(o *Office) { o.bindHost = host } }

// WithLogger sets the logger; the default discards.
func WithLogger(l hclog.Logger) Option { return func(o *Office) { o.log = l } }

type holding struct {
	proto, owner string
	// pending marks a port reserved by an Allocate whose bind check is
	// still running: it blocks other allocations but is not yet the
	// owner's to see or release.
	pending bool
}

// Office hands out ports. It is safe for concurrent use.
type Office struct {
	ranges   map[string]Range // immutable after New
	bindHost string
	bindAddr netip.Addr // bindHost parsed; invalid for "", the wildcard
	log      hclog.Logger

	mu   sync.Mutex
	held map[uint16]holding
	used [1024]uint64 // bitset of the keys of held, for fast first-fit scans
}

// New builds an office for the given per-protocol ranges.
func New(ranges map[string]Range, opts ...Option) (*Office, error) {
	o := &Office{
		ranges: make(map[string]Range, len(ranges)),
		log:    hclog.NewNullLogger(),
		held:   make(map[uint16]holding),
	}
	for _, opt := range opts {
		opt(o)
	}
	if len(ranges) == 0 {
		return nil, errors.New("portoffice: no port ranges")
	}
	if o.bindHost != "" {
		a, err := netip.ParseAddr(o.bindHost)
		if err != nil {
			return nil, fmt.Errorf("portoffice: bind host %q: want an IP address or \"\": %w", o.bindHost, err)
		}
		o.bindAddr = a
	}
	if o.log == nil {
		o.log = hclog.NewNullLogger()
	}
	// A bind host that is not a local address would make every port look
	// taken; say so now instead of reporting exhausted ranges later.
	if err := listenProbe(o.bindAddr, 0); err != nil {
		return nil, fmt.Errorf("portoffice: bind host %q cannot be bound: %w", o.bindHost, err)
	}
	for proto, r := range ranges {
		if proto == "" {
			return nil, errors.New("portoffice: empty protocol name")
		}
		if r.Start == 0 {
			return nil, fmt.Errorf("portoffice: %s range %s: start must be 1-65535", proto, r)
		}
		if r.End < r.Start {
			return nil, fmt.Errorf("portoffice: %s range %s: end before start", proto, r)
		}
		o.ranges[proto] = r
	}
	protos := sortedProtocols(o.ranges)
	for i, a := range protos {
		for _, b := range protos[i+1:] {
			ra, rb := o.ranges[a], o.ranges[b]
			if ra.Start <= rb.End && rb.Start <= ra.End {
				return nil, fmt.Errorf("portoffice: %s range %s overlaps %s range %s", a, ra, b, rb)
			}
		}
	}
	return o, nil
}

// protoRank gives the usual protocols their customary display order;
// others follow alphabetically.
func protoRank(p string) int {
	if i := slices.Index(lanwire.Protocols, p); i >= 0 {
		return i
	}
	return len(lanwire.Protocols)
}

func sortedProtocols[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		ri, rj := protoRank(out[i]), protoRank(out[j])
		if ri != rj {
			return ri < rj
		}
		return out[i] < out[j]
	})
	return out
}

func (o *Office) rangeOf(proto string) (Range, error) {
	r, ok := o.ranges[proto]
	if !ok {
		return Range{}, fmt.Errorf("portoffice: %w %q (have %v)", ErrUnknownProtocol, proto, sortedProtocols(o.ranges))
	}
	return r, nil
}

// hold and drop must be called with mu held.
func (o *Office) hold(p uint16, h holding) {
	o.held[p] = h
	o.used[p>>6] |= 1 << (p & 63)
}

func (o *Office) drop(p uint16) {
	delete(o.held, p)
	o.used[p>>6] &^= 1 << (p & 63)
}

// firstFree returns the first port in [from, end] not held. from and end
// are ints so that end == 65535 cannot wrap.
func (o *Office) firstFree(from, end int) (uint16, bool) {
	for from <= end {
		w := o.used[from>>6] >> (from & 63)
		if w != ^uint64(0)>>(from&63) {
			p := from + bits.TrailingZeros64(^w)
			if p > end {
				return 0, false
			}
			return uint16(p), true
		}
		from = (from | 63) + 1
	}
	return 0, false
}

// Allocate hands owner the first port of proto's range that is neither
// held nor listened on by another program.
func (o *Office) Allocate(proto, owner string) (uint16, error) {
	r, err := o.rangeOf(proto)
	if err != nil {
		return 0, err
	}
	if owner == "" {
		// An empty owner would make ReleaseOwner("") a catch-all.
		return 0, fmt.Errorf("portoffice: allocate %s port: empty owner", proto)
	}
	// Candidates are reserved under the lock and checked outside it, so
	// concurrent callers never get the same port and never wait on each
	// other's bind checks. next only grows, so the loop ends after at most
	// one pass over the range.
	next, foreign := int(r.Start), 0
	for {
		o.mu.Lock()
		p, ok := o.firstFree(next, int(r.End))
		if !ok {
			held := o.inUseLocked(r)
			o.mu.Unlock()
			return 0, fmt.Errorf("portoffice: %w: no free %s port in %s (%d held, %d used by other programs)",
				ErrExhausted, proto, r, held, foreign)
		}
		o.hold(p, holding{proto: proto, owner: owner, pending: true})
		o.mu.Unlock()

		err := o.probe(p)

		o.mu.Lock()
		if err == nil {
			o.held[p] = holding{proto: proto, owner: owner}
			o.mu.Unlock()
			return p, nil
		}
		o.drop(p)
		o.mu.Unlock()
		o.log.Debug("skipping port used by another program", "protocol", proto, "port", p, "error", err)
		foreign++
		next = int(p) + 1
	}
}

// AllocateFixed hands owner exactly this port (which may lie outside
// proto's range), or fails with ErrInUse: a fixed port is never shared.
func (o *Office) AllocateFixed(proto string, port uint16, owner string) error {
	if _, err := o.rangeOf(proto); err != nil {
		return err
	}
	if port == 0 {
		return fmt.Errorf("portoffice: fixed %s port 0 is not a port", proto)
	}
	if owner == "" {
		return fmt.Errorf("portoffice: fixed %s port %d: empty owner", proto, port)
	}
	o.mu.Lock()
	if h, ok := o.held[port]; ok {
		o.mu.Unlock()
		return fmt.Errorf("portoffice: fixed %s port %d: %w (held by %q as %s)", proto, port, ErrInUse, h.owner, h.proto)
	}
	o.hold(port, holding{proto: proto, owner: owner, pending: true})
	o.mu.Unlock()

	err := o.probe(port)

	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.drop(port)
		return fmt.Errorf("portoffice: fixed %s port %d: %w by another program: %w", proto, port, ErrInUse, err)
	}
	o.held[port] = holding{proto: proto, owner: owner}
	return nil
}

// probe reports whether the port can be bound right now, i.e. nothing is
// listening on it. The listener is closed at once and, with SO_REUSEADDR
// set as Go's listeners have it, leaves no TIME_WAIT obstacle for the child.
func (o *Office) probe(port uint16) error { return listenProbe(o.bindAddr, port) }

// Release gives back one port; only its owner may release it.
func (o *Office) Release(proto string, port uint16, owner string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	h, ok := o.held[port]
	switch {
	case !ok || h.pending:
		return fmt.Errorf("portoffice: release %s port %d for %q: %w", proto, port, owner, ErrNotHeld)
	case h.owner != owner:
		return fmt.Errorf("portoffice: release %s port %d for %q: %w by it (held by %q)", proto, port, owner, ErrNotHeld, h.owner)
	case h.proto != proto:
		return fmt.Errorf("portoffice: release %s port %d for %q: %w as %s (held as %s)", proto, port, owner, ErrNotHeld, proto, h.proto)
	}
	o.drop(port)
	return nil
}

// ReleaseOwner gives back all of owner's ports (the child exited) and
// returns them sorted.
func (o *Office) ReleaseOwner(owner string) []uint16 {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []uint16
	for p, h := range o.held {
		if h.owner == owner && !h.pending {
			out = append(out, p)
		}
	}
	for _, p := range out {
		o.drop(p)
	}
	slices.Sort(out)
	return out
}

// Held returns owner's ports by protocol, each list sorted. The map is
// empty, not nil, when the owner holds nothing.
func (o *Office) Held(owner string) map[string][]uint16 {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string][]uint16{}
	for p, h := range o.held {
		if h.owner == owner && !h.pending {
			out[h.proto] = append(out[h.proto], p)
		}
	}
	for _, ps := range out {
		slices.Sort(ps)
	}
	return out
}

// inUseLocked counts held ports inside r, whatever their protocol, a
// 64-port word of the bitset at a time: masters report their free ports
// after every start and exit, so this runs hundreds of times while
// hundreds of children start.
func (o *Office) inUseLocked(r Range) int {
	n := 0
	for from, end := int(r.Start), int(r.End); from <= end; from = (from | 63) + 1 {
		w := o.used[from>>6] >> (from & 63)
		if last := from | 63; last > end {
			// Keep only the bits of ports from..end.
			w &= 1<<(end-from+1) - 1
		}
		n += bits.OnesCount64(w)
	}
	return n
}

// Usage lists every range with its held count (ports held inside the
// range, by any protocol), ordered tcp, http, ws, then others by name.
func (o *Office) Usage() []Usage {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]Usage, 0, len(o.ranges))
	for _, proto := range sortedProtocols(o.ranges) {
		r := o.ranges[proto]
		out = append(out, Usage{Protocol: proto, Start: r.Start, End: r.End, InUse: o.inUseLocked(r)})
	}
	return out
}

// Free returns how many ports of proto's range nobody holds (0 for an
// unknown protocol). Other programs' listeners are not checked.
func (o *Office) Free(proto string) int {
	r, ok := o.ranges[proto]
	if !ok {
		return 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return Usage{Start: r.Start, End: r.End, InUse: o.inUseLocked(r)}.Free()
}
