package connguard

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// conn is a connection from addr that records its close.
type conn struct {
	net.Conn // nil: only RemoteAddr and Close are used
	addr     *net.TCPAddr
	closed   atomic.Bool
}

func (c *conn) RemoteAddr() net.Addr { return c.addr }
func (c *conn) Close() error         { c.closed.Store(true); return nil }

type shedLog struct {
	mu  sync.Mutex
	got []string
}

func (l *shedLog) add(src netip.Addr, why Reason) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, src.String()+" "+string(why))
}

func (l *shedLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.got
	l.got = nil
	return out
}

type fixture struct {
	t   *testing.T
	g   *Guard
	log *shedLog
}

func newFixture(t *testing.T, perSource, total int) *fixture {
	log := &shedLog{}
	return &fixture{t: t, log: log, g: New(Config{PerSource: perSource, Total: total, Timeout: 5 * time.Second, Shed: log.add})}
}

// open announces a new connection from ip.
func (f *fixture) open(ip string) *conn {
	c := &conn{addr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 40000))}
	f.g.ConnState(c, http.StateNew)
	return c
}

// closed checks which of cs are closed.
func (f *fixture) closed(want []bool, cs ...*conn) {
	f.t.Helper()
	for i, c := range cs {
		if c.closed.Load() != want[i] {
			f.t.Errorf("conn %d: closed %v, want %v", i, c.closed.Load(), want[i])
		}
	}
}

func (f *fixture) shed(want ...string) {
	f.t.Helper()
	if got := f.log.take(); !slices.Equal(got, want) {
		f.t.Errorf("shed %q, want %q", got, want)
	}
}

func (f *fixture) count(ip string, fromSrc, total int) {
	f.t.Helper()
	if s, all := f.g.Count(netip.MustParseAddr(ip)); s != fromSrc || all != total {
		f.t.Errorf("count %s: %d of %d, want %d of %d", ip, s, all, fromSrc, total)
	}
}

// TestPerSourceCap: a source at its cap gets a new connection only in
// place of its oldest one waiting for a request; when all are in the
// middle of one, the new connection is refused. Other sources are not
// touched.
func TestPerSourceCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, 2, 100)
		b := f.open("10.0.0.2")
		a1, a2 := f.open("10.0.0.1"), f.open("10.0.0.1")
		a3 := f.open("10.0.0.1")
		f.closed([]bool{true, false, false, false}, a1, a2, a3, b)
		f.shed("10.0.0.1 evicted")
		f.count("10.0.0.1", 2, 3)

		// a2 reads a request: a3 is the one to go, then a4.
		f.g.ConnState(a2, http.StateActive)
		a4 := f.open("10.0.0.1")
		f.closed([]bool{false, true, false}, a2, a3, a4)
		f.g.ConnState(a4, http.StateActive)
		a5 := f.open("10.0.0.1")
		f.closed([]bool{false, false, true}, a2, a4, a5)
		f.shed("10.0.0.1 evicted", "10.0.0.1 refused")
		f.count("10.0.0.1", 2, 3)

		// Once a request is answered the connection waits again.
		f.g.ConnState(a2, http.StateIdle)
		a6 := f.open("10.0.0.1")
		f.closed([]bool{true, false, false, false}, a2, a4, a6, b)
		f.shed("10.0.0.1 evicted")
	})
}

// TestTotalCap: at the total cap the oldest waiting connection of any
// source makes room.
func TestTotalCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, 10, 3)
		a, b, c := f.open("10.0.0.1"), f.open("10.0.0.2"), f.open("10.0.0.3")
		f.g.ConnState(a, http.StateActive)
		d := f.open("10.0.0.4")
		f.closed([]bool{false, true, false, false}, a, b, c, d)
		f.shed("10.0.0.2 evicted")
		f.count("10.0.0.4", 1, 3)
		f.g.ConnState(c, http.StateActive)
		f.g.ConnState(d, http.StateActive)
		e := f.open("10.0.0.5")
		f.closed([]bool{false, false, false, true}, a, c, d, e)
		f.shed("10.0.0.5 refused")
	})
}

// TestBothCaps: a connection over both caps evicts one of its source's
// for the first, which also makes room under the second.
func TestBothCaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, 2, 3)
		b := f.open("10.0.0.2")
		a1, a2 := f.open("10.0.0.1"), f.open("10.0.0.1")
		a3 := f.open("10.0.0.1")
		f.closed([]bool{false, true, false, false}, b, a1, a2, a3)
		f.shed("10.0.0.1 evicted")
		f.count("10.0.0.1", 2, 3)
	})
}

// TestAuthenticatedLeaveTheGuard: a connection that presented the token
// counts for no cap and never times out; hijacked and closed ones are
// forgotten.
func TestAuthenticatedLeaveTheGuard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, 1, 100)
		a1 := f.open("10.0.0.1")
		f.g.ConnState(a1, http.StateActive)
		f.g.Authenticated(a1)
		f.count("10.0.0.1", 0, 0)
		a2 := f.open("10.0.0.1")
		f.g.ConnState(a1, http.StateIdle)
		f.count("10.0.0.1", 1, 1)
		f.g.ConnState(a2, http.StateActive)
		f.g.ConnState(a2, http.StateHijacked)
		f.count("10.0.0.1", 0, 0)
		a3 := f.open("10.0.0.1")
		f.g.ConnState(a3, http.StateClosed)
		f.count("10.0.0.1", 0, 0)
		time.Sleep(time.Hour)
		synctest.Wait()
		f.closed([]bool{false, false, false}, a1, a2, a3)
		f.shed()
	})
}

// TestCloseFresh: at shutdown the connections that never began a request
// are closed, and so is any announced later; those that had a request are
// left to http.Server.Shutdown, and no closing is reported as shed.
func TestCloseFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, 10, 100)
		fresh := f.open("10.0.0.1")
		served := f.open("10.0.0.1")
		f.g.ConnState(served, http.StateActive)
		f.g.ConnState(served, http.StateIdle)
		busy := f.open("10.0.0.2")
		f.g.ConnState(busy, http.StateActive)
		f.g.CloseFresh()
		late := f.open("10.0.0.3")
		f.closed([]bool{true, false, false, true}, fresh, served, busy, late)
		f.count("10.0.0.1", 1, 2)
		f.shed()
	})
}

// TestTimeout: an unauthenticated connection is closed once it has spent
// Timeout in one state; every state change starts the time over.
func TestTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, 10, 100)
		silent := f.open("10.0.0.1")
		polling := f.open("10.0.0.2")
		time.Sleep(4 * time.Second)
		f.g.ConnState(polling, http.StateActive)
		time.Sleep(time.Second)
		f.g.ConnState(polling, http.StateIdle) // at 5s
		synctest.Wait()
		f.closed([]bool{true, false}, silent, polling)
		f.shed("10.0.0.1 timed out")
		f.count("10.0.0.1", 0, 1)

		time.Sleep(4 * time.Second) // 9s: idle for 4s
		synctest.Wait()
		f.closed([]bool{false}, polling)
		time.Sleep(time.Second) // 10s: idle for 5s
		synctest.Wait()
		f.closed([]bool{true}, polling)
		f.shed("10.0.0.2 timed out")
		f.count("10.0.0.2", 0, 0)

		// One stuck in a request (a body sent a byte at a time, a
		// response not read) is closed too.
		slow := f.open("10.0.0.3")
		f.g.ConnState(slow, http.StateActive)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		f.closed([]bool{true}, slow)
		f.shed("10.0.0.3 timed out")
	})
}

// TestNonTCPShareOneSource: connections without an IP address count as
// one source.
func TestNonTCPShareOneSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, 1, 100)
		p1, p2 := pipe(t), pipe(t)
		f.g.ConnState(p1, http.StateNew)
		f.g.ConnState(p2, http.StateNew)
		f.shed("invalid IP evicted")
		if _, total := f.g.Count(netip.Addr{}); total != 1 {
			t.Errorf("total %d, want 1", total)
		}
	})
}

func pipe(t *testing.T) net.Conn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a
}
