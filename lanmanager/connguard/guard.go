// Package connguard owns the LAN manager's connections that have not yet
// presented the token: how many there are from each source address and in
// all, which one to close when a cap is reached, and closing those that
// sit too long without authenticating, and, at shutdown, those that never
// began a request. A stranger can then hold only a
// bounded share of the process's descriptors, and an admin call or a
// master's link always finds one (sshd's MaxStartups, PerSourceMaxStartups
// and LoginGraceTime do the same for logins).
//
// It works from http.Server's ConnState hook, and Authenticated, called
// when a request on the connection carried the token; from then on the
// connection is no longer its concern.
package connguard

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Config sets the caps; all are required.
type Config struct {
	// PerSource caps the unauthenticated connections from one address.
	PerSource int
	// Total caps the unauthenticated connections from all addresses.
	Total int
	// Timeout closes an unauthenticated connection that stays this long
	// in one state: waiting for a request, reading or answering one.
	Timeout time.Duration
	// Shed, if set, is told of every connection closed because of a cap
	// (evicted: an older one made room; otherwise the new one was
	// refused) or of the timeout (timedOut). It runs outside the
	// guard's lock.
	Shed func(src netip.Addr, why Reason)
}

// Reason says why a connection was closed.
type Reason string

// The reasons of Shed.
const (
	// Refused: a new connection over a cap, with every other connection
	// it could replace in the middle of a request.
	Refused Reason = "refused"
	// Evicted: the oldest connection waiting for a request (or for its
	// first), closed to make room for a new one.
	Evicted Reason = "evicted"
	// TimedOut: the connection stayed Timeout in one state.
	TimedOut Reason = "timed out"
)

// Guard tracks unauthenticated connections. Its methods are safe for
// concurrent use.
type Guard struct {
	cfg Config

	mu       sync.Mutex
	conns    map[net.Conn]*entry
	bySource map[netip.Addr]int
	seq      uint64
	closing  bool // CloseFresh ran: new connections are closed at once
}

type entry struct {
	c      net.Conn
	src    netip.Addr
	seq    uint64 // accept order: lower is older
	active bool   // a request is being read or answered
	fresh  bool   // no request has begun on it yet
	timer  *time.Timer
	gen    uint64 // which state the timer is for
}

// New returns a guard with cfg's caps.
func New(cfg Config) *Guard {
	return &Guard{cfg: cfg, conns: map[net.Conn]*entry{}, bySource: map[netip.Addr]int{}}
}

// shed is a connection to close, outside the lock.
type shed struct {
	c   net.Conn
	src netip.Addr
	why Reason
}

// ConnState is an http.Server ConnState hook.
func (g *Guard) ConnState(c net.Conn, st http.ConnState) {
	var out []shed
	g.mu.Lock()
	switch st {
	case http.StateNew:
		if g.closing {
			g.mu.Unlock()
			_ = c.Close()
			return
		}
		out = g.admit(c)
	case http.StateActive, http.StateIdle:
		if e := g.conns[c]; e != nil {
			e.active = st == http.StateActive
			e.fresh = e.fresh && !e.active
			g.arm(e)
		}
	case http.StateHijacked, http.StateClosed:
		if e := g.conns[c]; e != nil {
			g.forget(e)
		}
	}
	g.mu.Unlock()
	g.close(out)
}

// CloseFresh closes every connection that has not begun a request, and
// any accepted later: http.Server.Shutdown would wait up to five seconds
// for such a connection before it counts it as idle, and Go's HTTP client
// leaves one behind whenever a dial it started loses the race to a
// connection freed by another request. A request still on its way would
// have been refused by the closed listener a moment later anyway.
func (g *Guard) CloseFresh() {
	g.mu.Lock()
	g.closing = true
	var out []net.Conn
	for c, e := range g.conns {
		if e.fresh {
			g.forget(e)
			out = append(out, c)
		}
	}
	g.mu.Unlock()
	for _, c := range out {
		_ = c.Close()
	}
}

// Authenticated says a request on c carried the token: c is trusted from
// now on and no longer counted.
func (g *Guard) Authenticated(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.conns[c]; e != nil {
		g.forget(e)
	}
}

// Count returns the unauthenticated connections from src and in all.
func (g *Guard) Count(src netip.Addr) (fromSrc, total int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.bySource[src], len(g.conns)
}

// admit tracks a new connection, making room under the caps by evicting
// the oldest connection not in the middle of a request, or refusing the
// new one when there is none.
func (g *Guard) admit(c net.Conn) []shed {
	src := sourceOf(c)
	var out []shed
	if g.bySource[src] >= g.cfg.PerSource {
		v := g.oldestWaiting(func(e *entry) bool { return e.src == src })
		if v == nil {
			return append(out, shed{c, src, Refused})
		}
		g.forget(v)
		out = append(out, shed{v.c, v.src, Evicted})
	}
	if len(g.conns) >= g.cfg.Total {
		v := g.oldestWaiting(func(*entry) bool { return true })
		if v == nil {
			return append(out, shed{c, src, Refused})
		}
		g.forget(v)
		out = append(out, shed{v.c, v.src, Evicted})
	}
	g.seq++
	e := &entry{c: c, src: src, seq: g.seq, fresh: true}
	g.conns[c] = e
	g.bySource[src]++
	g.arm(e)
	return out
}

// oldestWaiting returns the oldest connection that match accepts and that
// is not reading or answering a request, or nil.
func (g *Guard) oldestWaiting(match func(*entry) bool) *entry {
	var old *entry
	for _, e := range g.conns {
		if !e.active && match(e) && (old == nil || e.seq < old.seq) {
			old = e
		}
	}
	return old
}

// arm starts e's timeout over for its new state.
func (g *Guard) arm(e *entry) {
	if e.timer != nil {
		e.timer.Stop()
	}
	e.gen++
	gen := e.gen
	e.timer = time.AfterFunc(g.cfg.Timeout, func() { g.expire(e, gen) })
}

// expire closes e if it is still unauthenticated and in the state its
// timer was armed for.
func (g *Guard) expire(e *entry, gen uint64) {
	g.mu.Lock()
	if g.conns[e.c] != e || e.gen != gen {
		g.mu.Unlock()
		return
	}
	g.forget(e)
	g.mu.Unlock()
	g.close([]shed{{e.c, e.src, TimedOut}})
}

func (g *Guard) forget(e *entry) {
	if e.timer != nil {
		e.timer.Stop()
	}
	delete(g.conns, e.c)
	if g.bySource[e.src]--; g.bySource[e.src] <= 0 {
		delete(g.bySource, e.src)
	}
}

func (g *Guard) close(out []shed) {
	for _, s := range out {
		_ = s.c.Close()
		if g.cfg.Shed != nil {
			g.cfg.Shed(s.src, s.why)
		}
	}
}

// sourceOf is c's remote IP address; connections that have none (not
// TCP) share the zero address.
func sourceOf(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
