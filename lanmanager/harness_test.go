package lanmanager_test

import (
	"context"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
	"github.com/gorilla/websocket"
)

const (
	testToken = "secret-token"
	// wait bounds every wait in the tests; generous for a loaded 2-core box.
	wait = 20 * time.Second
)

type env struct {
	t      testing.TB
	srv    *lanmanager.Server
	base   string
	wsURL  string
	client *adminclient.Client
	cancel context.CancelFunc
	done   chan error
}

// testConfig has short periods so the tests exercise expiry paths quickly.
func testConfig() lanmanager.Config {
	return lanmanager.Config{
		Addr:                "127.0.0.1:0",
		Token:               testToken,
		Heartbeat:           time.Second,
		Grace:               time.Minute,
		PortCheckTimeout:    time.Second,
		PortCheckAttempts:   2,
		PortCheckInterval:   50 * time.Millisecond,
		RetryBackoffInitial: 100 * time.Millisecond,
		RetryBackoffMax:     400 * time.Millisecond,
	}
}

func start(t testing.TB, cfg lanmanager.Config) *env {
	t.Helper()
	if cfg.Store == nil && cfg.DataDir == "" {
		cfg.Store = store.NewMemory()
	}
	srv, err := lanmanager.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- srv.Run(ctx) }()
	addr := srv.Addr().String()
	e.base = "http://" + addr
	e.wsURL = "ws://" + addr + lanwire.Path
	e.client = adminclient.New(e.base, cfg.Token)
	t.Cleanup(e.stop)
	return e
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run: %v", err)
		}
	case <-time.After(wait):
		e.t.Errorf("Run did not return")
	}
}

type frame struct {
	typ string
	p   any
}

// master is a minimal test master speaking the link protocol directly.
type master struct {
	t      testing.TB
	conn   *websocket.Conn
	frames chan frame
	closed chan struct{}
}

func (e *env) dial(token string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	d := websocket.Dialer{HandshakeTimeout: wait}
	return d.Dial(e.wsURL, h)
}

func (e *env) rawMaster(t testing.TB) *master {
	t.Helper()
	conn, _, err := e.dial(testToken)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	m := &master{t: t, conn: conn, frames: make(chan frame, 4096), closed: make(chan struct{})}
	go func() {
		defer close(m.closed)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			typ, p, err := lanwire.Decode(data)
			if err != nil {
				t.Errorf("server sent a bad frame %q: %v", data, err)
				return
			}
			m.frames <- frame{typ, p}
		}
	}()
	t.Cleanup(func() { _ = conn.Close() })
	return m
}

func hello(id string, modules ...string) lanwire.Hello {
	return lanwire.Hello{MachineID: id, Address: "127.0.0.1", Modules: modules}
}

// connect dials, says hello and waits for welcome.
func (e *env) connect(t testing.TB, h lanwire.Hello) *master {
	t.Helper()
	m := e.rawMaster(t)
	m.send(lanwire.TypeHello, &h)
	m.expect(lanwire.TypeWelcome)
	return m
}

func (m *master) send(typ string, p any) {
	m.t.Helper()
	b, err := lanwire.Encode(typ, p)
	if err != nil {
		m.t.Fatal(err)
	}
	m.sendRaw(b)
}

func (m *master) sendRaw(b []byte) {
	m.t.Helper()
	if err := m.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		m.t.Fatalf("write: %v", err)
	}
}

func (m *master) next() frame {
	m.t.Helper()
	select {
	case f := <-m.frames:
		return f
	case <-m.closed:
		select {
		case f := <-m.frames:
			return f
		default:
		}
		m.t.Fatalf("link closed while waiting for a frame")
	case <-time.After(wait):
		m.t.Fatalf("no frame within %s", wait)
	}
	return frame{}
}

// expect returns the next frame of type typ, skipping needs lists; any
// other frame fails the test.
func (m *master) expect(typ string) frame {
	m.t.Helper()
	for range 10000 {
		f := m.next()
		if f.typ == typ {
			return f
		}
		if f.typ != lanwire.TypeNeeds {
			m.t.Fatalf("got %s %+v, want %s", f.typ, f.p, typ)
		}
	}
	m.t.Fatalf("no %s frame", typ)
	return frame{}
}

func needNames(f frame) []string {
	var out []string
	for _, n := range f.p.(*lanwire.Needs).Needs {
		out = append(out, n.Instance)
	}
	return out
}

// expectNeeds waits for a needs list equal to want (sorted).
func (m *master) expectNeeds(want ...string) {
	m.t.Helper()
	deadline := time.Now().Add(wait)
	var last []string
	for time.Now().Before(deadline) {
		f := m.next()
		if f.typ != lanwire.TypeNeeds {
			m.t.Fatalf("got %s %+v while waiting for needs %v", f.typ, f.p, want)
		}
		last = needNames(f)
		if slices.Equal(last, want) {
			return
		}
	}
	m.t.Fatalf("needs = %v, want %v", last, want)
}

// expectClosed waits for the server to close the link.
func (m *master) expectClosed() {
	m.t.Helper()
	select {
	case <-m.closed:
	case <-time.After(wait):
		m.t.Fatal("link not closed")
	}
}

// quiet asserts no frame other than needs lists arrives for d.
func (m *master) quiet(d time.Duration) {
	m.t.Helper()
	m.onlyNeeds(d, nil)
}

// onlyNeeds asserts no frame other than needs lists arrives for d, and
// hands the instances of each needs list to check, if any.
func (m *master) onlyNeeds(d time.Duration, check func(offered []string)) {
	m.t.Helper()
	timer := time.After(d)
	for {
		select {
		case f := <-m.frames:
			if f.typ != lanwire.TypeNeeds {
				m.t.Fatalf("unexpected %s %+v", f.typ, f.p)
			}
			if check != nil {
				check(needNames(f))
			}
		case <-timer:
			return
		}
	}
}

// claim claims inst and expects the grant.
func (m *master) claim(inst string) lanwire.Need {
	m.t.Helper()
	m.send(lanwire.TypeClaim, &lanwire.Claim{Instance: inst})
	return m.expect(lanwire.TypeGrant).p.(*lanwire.Grant).Need
}

// listener returns the port of a live loopback listener closed at cleanup.
func listener(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// closedPort returns a loopback port nothing listens on (just released).
func closedPort(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	_ = ln.Close()
	return port
}

// publish claims, spawns on a live port and waits for approval.
func (m *master) publish(inst string) lanwire.ServiceRecord {
	m.t.Helper()
	m.claim(inst)
	port := listener(m.t)
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: inst, PID: 4242, Ports: lanwire.Ports{"tcp": port}, StartedAt: time.Now()})
	return m.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service
}

func tcpNeed(inst, module string) lanwire.Need {
	return lanwire.Need{Instance: inst, Module: module, Protocols: []string{"tcp"}}
}

func (e *env) addNeeds(needs ...lanwire.Need) {
	e.t.Helper()
	for _, n := range needs {
		if err := e.srv.AddNeed(n); err != nil {
			e.t.Fatalf("AddNeed(%s): %v", n.Instance, err)
		}
	}
}

// eventually polls cond until it holds or the wait bound passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func needState(e *env, inst string) (string, int, string) {
	for _, n := range e.srv.Needs() {
		if n.Need.Instance == inst {
			return n.State, n.Attempts, n.LastError
		}
	}
	return "", 0, ""
}

func lanmanagerFilter() lanmanager.ServiceFilter { return lanmanager.ServiceFilter{} }
