package lanmanager_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/adminapi"
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

// testConfig has short periods so the tests exercise expiry paths
// quickly. Its fencing timings are the defaults (a 10s lease): long
// enough that no test but the fencing ones sees a lost master fenced.
func testConfig() lanmanager.Config {
	return lanmanager.Config{
		Addr:                "127.0.0.1:0",
		Token:               testToken,
		Heartbeat:           time.Second,
		PortCheckTimeout:    time.Second,
		PortCheckAttempts:   2,
		PortCheckInterval:   50 * time.Millisecond,
		RetryBackoffInitial: 100 * time.Millisecond,
		RetryBackoffMax:     400 * time.Millisecond,
	}
}

// fenceConfig has short fencing timings, for the tests that wait fences
// out. Their masters ping every heartbeat, as real ones do: a link silent
// for three heartbeats is dropped, and a loaded test machine can stall a
// goroutine for a good part of 3×100ms.
func fenceConfig() lanmanager.Config {
	cfg := testConfig()
	cfg.Heartbeat = 200 * time.Millisecond
	cfg.Lease = 2 * time.Second
	cfg.FenceGrace = 500 * time.Millisecond
	cfg.ExitFence = 300 * time.Millisecond
	cfg.Margin = 200 * time.Millisecond
	return cfg
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

// stop cancels Run and waits for it; Run must return nil.
func (e *env) stop() {
	e.t.Helper()
	if err := e.halt(); err != nil {
		e.t.Errorf("Run: %v", err)
	}
}

// halt cancels Run and returns its result.
func (e *env) halt() error {
	e.t.Helper()
	if e.cancel == nil {
		return nil
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		return err
	case <-time.After(wait):
		e.t.Errorf("Run did not return")
		return nil
	}
}

func (e *env) needs() []adminapi.NeedStatus {
	e.t.Helper()
	out, err := e.srv.Needs()
	if err != nil {
		e.t.Fatalf("Needs: %v", err)
	}
	return out
}

func (e *env) services() []lanwire.ServiceRecord {
	e.t.Helper()
	out, err := e.srv.Services(lanmanager.ServiceFilter{})
	if err != nil {
		e.t.Fatalf("Services: %v", err)
	}
	return out
}

func (e *env) machines() []adminapi.MachineInfo {
	e.t.Helper()
	out, err := e.srv.Machines()
	if err != nil {
		e.t.Fatalf("Machines: %v", err)
	}
	return out
}

func (e *env) need(inst string) adminapi.NeedStatus {
	e.t.Helper()
	for _, n := range e.needs() {
		if n.Need.Instance == inst {
			return n
		}
	}
	return adminapi.NeedStatus{}
}

type frame struct {
	typ string
	p   any
	at  time.Time // when the master's reader got it
}

// master is a minimal test master speaking the link protocol directly. It
// remembers the epoch of each grant, as a real master does, and can ping
// the way a real master renews its lease.
type master struct {
	t       testing.TB
	conn    *websocket.Conn
	frames  chan frame
	closed  chan struct{}
	readErr error // why the reader stopped; set before closed is closed
	pongs   chan []byte
	base    time.Time // the clock of the ping payloads

	mu       sync.Mutex
	epochs   map[string]uint64
	answered time.Duration // send time (since base) of the last ping answered
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
	m := &master{
		t: t, conn: conn, frames: make(chan frame, 4096), closed: make(chan struct{}),
		pongs: make(chan []byte, 64), base: time.Now(), epochs: map[string]uint64{},
	}
	conn.SetPongHandler(m.pong)
	go m.read()
	t.Cleanup(func() { _ = conn.Close() })
	return m
}

func (m *master) read() {
	defer close(m.closed)
	for {
		_, data, err := m.conn.ReadMessage()
		if err != nil {
			m.readErr = err
			return
		}
		at := time.Now()
		typ, p, err := lanwire.Decode(data)
		if err != nil {
			m.t.Errorf("server sent a bad frame %q: %v", data, err)
			return
		}
		if g, ok := p.(*lanwire.Grant); ok {
			m.mu.Lock()
			m.epochs[g.Need.Instance] = g.Epoch
			m.mu.Unlock()
		}
		m.frames <- frame{typ, p, at}
	}
}

// pong records an answered ping.
func (m *master) pong(data string) error {
	if sent, ok := lanwire.ParsePingPayload([]byte(data)); ok {
		m.mu.Lock()
		m.answered = max(m.answered, sent)
		m.mu.Unlock()
	}
	select {
	case m.pongs <- []byte(data):
	default:
	}
	return nil
}

// ping sends one ping stamped with the time since m.base.
func (m *master) ping() []byte {
	m.t.Helper()
	p := lanwire.PingPayload(time.Since(m.base))
	if err := m.conn.WriteControl(websocket.PingMessage, p, time.Now().Add(wait)); err != nil {
		m.t.Fatalf("ping: %v", err)
	}
	return p
}

// expectPong waits for the pong that echoes p.
func (m *master) expectPong(p []byte) {
	m.t.Helper()
	select {
	case got := <-m.pongs:
		if string(got) != string(p) {
			m.t.Fatalf("pong %x to ping %x", got, p)
		}
	case <-time.After(wait):
		m.t.Fatalf("no pong to ping %x", p)
	}
}

// pinging pings every period, as a real master does, until stop is
// called (or the test ends); stop returns once no ping is being written.
func (m *master) pinging(period time.Duration) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			p := lanwire.PingPayload(time.Since(m.base))
			if m.conn.WriteControl(websocket.PingMessage, p, time.Now().Add(wait)) != nil {
				return
			}
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(quit); <-done }) }
	m.t.Cleanup(stop)
	return stop
}

// lastAnswered is when the last ping the LAN manager answered was sent:
// the master's lease runs from there.
func (m *master) lastAnswered() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.base.Add(m.answered)
}

// epoch is the epoch of inst's grant to this master.
func (m *master) epoch(inst string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.epochs[inst]
	if !ok {
		m.t.Fatalf("no grant of %s to this master", inst)
	}
	return e
}

// running describes inst as running under pid, for a later hello.
func (m *master) running(inst string, pid int, ports lanwire.Ports) lanwire.RunningService {
	m.t.Helper()
	return lanwire.RunningService{Instance: inst, Module: "web", Epoch: m.epoch(inst), PID: pid, Ports: ports}
}

// identityOf is the identity the tests' master of a machine has.
func identityOf(machine string) string { return machine + "-identity-0123456789" }

func hello(id string, modules ...string) lanwire.Hello {
	return lanwire.Hello{MachineID: id, Identity: identityOf(id), Address: "127.0.0.1", Modules: modules}
}

// connect dials, says hello and waits for welcome. The master knows the
// epochs of the copies its hello reports.
func (e *env) connect(t testing.TB, h lanwire.Hello) *master {
	t.Helper()
	m := e.rawMaster(t)
	for _, r := range h.Running {
		m.epochs[r.Instance] = r.Epoch
	}
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

// closeWith closes the link with a close frame, waits for the LAN
// manager's answer, then closes the connection.
func (m *master) closeWith(code int) {
	m.t.Helper()
	msg := websocket.FormatCloseMessage(code, "")
	if err := m.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wait)); err != nil {
		m.t.Fatalf("close frame: %v", err)
	}
	m.expectClosed()
	_ = m.conn.Close()
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
		m.t.Fatalf("link closed while waiting for a frame: %v", m.readErr)
	case <-time.After(wait):
		m.t.Fatalf("no frame within %s", wait)
	}
	return frame{}
}

// expect returns the next frame of type typ, skipping needs lists; any
// other frame fails the test.
func (m *master) expect(typ string) frame {
	m.t.Helper()
	return m.expectNotOffered(typ, "")
}

// expectNotOffered is expect that also fails if a skipped needs list
// offers inst.
func (m *master) expectNotOffered(typ, inst string) frame {
	m.t.Helper()
	for range 10000 {
		f := m.next()
		if f.typ == typ {
			return f
		}
		if f.typ != lanwire.TypeNeeds {
			m.t.Fatalf("got %s %+v, want %s", f.typ, f.p, typ)
		}
		if inst != "" && slices.Contains(needNames(f), inst) {
			m.t.Fatalf("%s offered while waiting for %s", inst, typ)
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

// offeredAt waits for the first needs list that offers inst and returns
// when it arrived; any other frame fails the test.
func (m *master) offeredAt(inst string) time.Time {
	m.t.Helper()
	for range 10000 {
		f := m.next()
		if f.typ != lanwire.TypeNeeds {
			m.t.Fatalf("got %s %+v while waiting for %s to be offered", f.typ, f.p, inst)
		}
		if slices.Contains(needNames(f), inst) {
			return f.at
		}
	}
	m.t.Fatalf("%s not offered", inst)
	return time.Time{}
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

// closeCode waits for the link to end and returns the code of the
// server's close frame (CloseAbnormal if it sent none).
func (m *master) closeCode() int {
	m.t.Helper()
	m.expectClosed()
	var ce *websocket.CloseError
	if !errors.As(m.readErr, &ce) {
		m.t.Fatalf("link ended with %v, not a close", m.readErr)
	}
	return ce.Code
}

// quiet asserts no frame other than needs lists arrives for d.
func (m *master) quiet(d time.Duration) {
	m.t.Helper()
	timer := time.After(d)
	for {
		select {
		case f := <-m.frames:
			if f.typ != lanwire.TypeNeeds {
				m.t.Fatalf("unexpected %s %+v", f.typ, f.p)
			}
		case <-timer:
			return
		}
	}
}

// claim claims inst and expects the grant.
func (m *master) claim(inst string) *lanwire.Grant {
	m.t.Helper()
	m.send(lanwire.TypeClaim, &lanwire.Claim{Instance: inst})
	return m.expect(lanwire.TypeGrant).p.(*lanwire.Grant)
}

// deny claims inst and expects a deny.
func (m *master) deny(inst string) *lanwire.Deny {
	m.t.Helper()
	m.send(lanwire.TypeClaim, &lanwire.Claim{Instance: inst})
	d := m.expect(lanwire.TypeDeny).p.(*lanwire.Deny)
	if d.Instance != inst {
		m.t.Fatalf("deny %+v, want one for %s", d, inst)
	}
	return d
}

// spawned reports inst's copy up under its grant's epoch.
func (m *master) spawned(inst string, pid int, ports lanwire.Ports) {
	m.t.Helper()
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: inst, Epoch: m.epoch(inst), PID: pid, Ports: ports, StartedAt: time.Now()})
}

// down reports inst's copy gone (or restarting).
func (m *master) down(inst string, restarting bool) {
	m.t.Helper()
	m.send(lanwire.TypeDown, &lanwire.Down{Instance: inst, Epoch: m.epoch(inst), PID: 4242, ExitCode: 1, Restarting: restarting})
}

// spawnFailed gives inst's grant back.
func (m *master) spawnFailed(inst, msg string) {
	m.t.Helper()
	m.send(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: inst, Epoch: m.epoch(inst), Error: msg})
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
	g := m.claim(inst)
	m.spawned(inst, 4242, lanwire.Ports{"tcp": listener(m.t)})
	rec := m.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service
	if rec.Instance != inst || rec.Epoch != g.Epoch {
		m.t.Fatalf("approved %+v, want %s under epoch %d", rec, inst, g.Epoch)
	}
	return rec
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

// watch subscribes to every service event until the test ends.
func (e *env) watch(t testing.TB) <-chan adminapi.ServiceEvent {
	t.Helper()
	_, events, cancel := e.srv.Watch("")
	t.Cleanup(cancel)
	return events
}

// expectEvent returns the next event, which must be typ of inst.
func expectEvent(t testing.TB, events <-chan adminapi.ServiceEvent, typ, inst string) lanwire.ServiceRecord {
	t.Helper()
	select {
	case ev := <-events:
		if ev.Type != typ || ev.Service.Instance != inst {
			t.Fatalf("event %s %s, want %s %s", ev.Type, ev.Service.Instance, typ, inst)
		}
		return ev.Service
	case <-time.After(wait):
		t.Fatalf("no %s event for %s", typ, inst)
	}
	return lanwire.ServiceRecord{}
}

// noEvent asserts that no event came from the batches before now: the
// loop emits a batch's events before it takes the next, so one call
// through it is the barrier.
func (e *env) noEvent(events <-chan adminapi.ServiceEvent) {
	e.t.Helper()
	e.needs()
	select {
	case ev := <-events:
		e.t.Fatalf("unexpected event %s %+v", ev.Type, ev.Service)
	default:
	}
}
