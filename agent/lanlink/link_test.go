package lanlink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/lanwire"
)

// waitLimit bounds every wait in these tests; generous for a loaded machine.
const waitLimit = 20 * time.Second

const testToken = "s3cret-token"

// eventually polls cond until it holds or waitLimit passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkLeaks must be called first in a test so its cleanup runs last, after
// the link and the server are gone.
func checkLeaks(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitLimit)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("goroutines: %d, want at most %d:\n%s", runtime.NumGoroutine(), base, buf[:n])
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

type stateEvent struct {
	state string
	err   error
}

type frame struct {
	typ     string
	payload any
}

// recorder is the test's Handler.
type recorder struct {
	hello lanwire.Hello

	holds atomic.Bool
	// onHello, if set, runs inside Hello.
	onHello func()

	mu         sync.Mutex
	helloCalls int
	states     []stateEvent
	frames     []frame
	welcomes   []time.Duration
	renewals   []time.Duration
}

func (r *recorder) Hello() lanwire.Hello {
	if r.onHello != nil {
		r.onHello()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.helloCalls++
	return r.hello
}

func (r *recorder) HandleFrame(typ string, payload any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames = append(r.frames, frame{typ, payload})
}

func (r *recorder) Welcomed(w *lanwire.Welcome, helloSent time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.welcomes = append(r.welcomes, helloSent)
}

func (r *recorder) Renewed(sent time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.renewals = append(r.renewals, sent)
}

func (r *recorder) HoldsCopies() bool { return r.holds.Load() }

func (r *recorder) LinkState(state string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, stateEvent{state, err})
}

func (r *recorder) snapshot() ([]stateEvent, []frame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]stateEvent(nil), r.states...), append([]frame(nil), r.frames...)
}

// disconnects returns the errors of the disconnected states so far.
func (r *recorder) disconnects() []error {
	states, _ := r.snapshot()
	var errs []error
	for _, s := range states {
		if s.state == StateDisconnected {
			errs = append(errs, s.err)
		}
	}
	return errs
}

func testHello() lanwire.Hello {
	return lanwire.Hello{
		MachineID: "m1",
		Identity:  "0123456789abcdef",
		Modules:   []string{"web", "db"},
		Capacity:  lanwire.Capacity{MaxProcesses: 4, Running: 1, FreePorts: map[string]int{"tcp": 10}},
		Running: []lanwire.RunningService{{
			Instance: "web1", Module: "web", Epoch: 3, PID: 4242,
			Ports: lanwire.Ports{"http": 8080}, StartedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		}},
		Version: "test",
	}
}

// lanServer plays the LAN manager on 127.0.0.1:0.
type lanServer struct {
	t    *testing.T
	srv  *httptest.Server
	stop chan struct{} // closed at cleanup to release stalled handlers
	// refuse answers 401 to attempt n (1-based) when it returns true.
	refuse func(n int) bool
	// session plays session n after the hello was read.
	session func(n int, c *websocket.Conn)
	// onAttempt, if set, runs at each connection attempt.
	onAttempt func()

	mu       sync.Mutex
	attempts int
	hellos   []lanwire.Hello
	firsts   []string // type of the first frame of each session
}

func newLAN(t *testing.T, session func(n int, c *websocket.Conn)) *lanServer {
	t.Helper()
	s := &lanServer{t: t, stop: make(chan struct{}), session: session, refuse: func(int) bool { return false }}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		close(s.stop)
		s.srv.Close()
	})
	return s
}

func (s *lanServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.attempts++
	n := s.attempts
	s.mu.Unlock()
	if s.onAttempt != nil {
		s.onAttempt()
	}
	if r.URL.Path != lanwire.Path || r.Header.Get("Authorization") != "Bearer "+testToken || s.refuse(n) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	up := websocket.Upgrader{}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		s.t.Errorf("upgrade: %v", err)
		return
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	_, msg, err := c.ReadMessage()
	if err != nil {
		return // the client gave up before its hello, e.g. a bad one
	}
	typ, payload, err := lanwire.Decode(msg)
	s.mu.Lock()
	s.firsts = append(s.firsts, typ)
	if h, ok := payload.(*lanwire.Hello); ok {
		s.hellos = append(s.hellos, *h)
	}
	s.mu.Unlock()
	if err != nil {
		s.t.Errorf("first frame %q: %v", msg, err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	s.session(n, c)
}

func (s *lanServer) counts() (attempts, hellos int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts, len(s.hellos)
}

func (s *lanServer) port() int {
	return s.srv.Listener.Addr().(*net.TCPAddr).Port
}

func send(t *testing.T, c *websocket.Conn, typ string, payload any) {
	t.Helper()
	b, err := lanwire.Encode(typ, payload)
	if err != nil {
		t.Errorf("encode %s: %v", typ, err)
		return
	}
	if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Errorf("server write %s: %v", typ, err)
	}
}

func welcome(t *testing.T, c *websocket.Conn, n int, heartbeatMS int64) {
	t.Helper()
	timings := lanwire.DefaultTimings()
	if heartbeatMS > 0 {
		timings.HeartbeatMS = heartbeatMS
	}
	send(t, c, lanwire.TypeWelcome, &lanwire.Welcome{SessionID: fmt.Sprintf("s-%d", n), Timings: timings})
}

// drain reads until the client goes away, so pings get their pongs and a
// close gets its answer; it returns the frames and the final error.
func drain(c *websocket.Conn, got chan<- []byte) error {
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			return err
		}
		if got != nil {
			got <- msg
		}
	}
}

type linkOpt func(*Config)

func newLink(t *testing.T, s *lanServer, opts ...linkOpt) (*Link, *recorder) {
	t.Helper()
	rec := &recorder{hello: testHello()}
	cfg := Config{
		Address:        "127.0.0.1",
		Port:           s.port(),
		Token:          testToken,
		Handler:        rec,
		Logger:         hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Debug, Output: testWriter{t}}),
		BackoffInitial: 5 * time.Millisecond,
		BackoffMax:     20 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l, rec
}

// testWriter sends the link's log to the test log; Run has returned before
// the test ends, so nothing logs after that.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// start runs l until the returned cancel is called or the test ends; cancel
// waits for Run to return nil.
func start(t *testing.T, l *Link) (cancel func()) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	cancel = func() {
		once.Do(func() {
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(waitLimit):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(cancel)
	return cancel
}

func TestNew(t *testing.T) {
	h := &recorder{}
	ok := Config{Address: "10.0.0.1", Token: "t", Handler: h}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
		wantURL string
	}{
		{"defaults", func(*Config) {}, "", "ws://10.0.0.1:23552/v1/link"},
		{"ipv6", func(c *Config) { c.Address = "::1"; c.Port = 9 }, "", "ws://[::1]:9/v1/link"},
		{"bracketed ipv6", func(c *Config) { c.Address = "[::1]" }, "", "ws://[::1]:23552/v1/link"},
		{"host name", func(c *Config) { c.Address = "lan.example" }, "", "ws://lan.example:23552/v1/link"},
		{"no handler", func(c *Config) { c.Handler = nil }, "no handler", ""},
		{"no address", func(c *Config) { c.Address = "" }, "address: empty", ""},
		{"address with port", func(c *Config) { c.Address = "host:80" }, "", "ws://host:80/v1/link"},
		{"several addresses", func(c *Config) { c.Address = "a, b:80,[::1]:81" }, "", "ws://a:23552/v1/link"},
		{"address with port 0", func(c *Config) { c.Address = "host:0" }, `"host:0": port "0": want 1-65535`, ""},
		{"address twice", func(c *Config) { c.Address = "a,a:23552" }, "a:23552 given twice", ""},
		{"empty address in a list", func(c *Config) { c.Address = "a,,b" }, "address: empty", ""},
		{"address with scheme", func(c *Config) { c.Address = "ws://a:1" }, "neither an IP nor a host name", ""},
		{"address with path", func(c *Config) { c.Address = "host/x" }, "neither an IP nor a host name", ""},
		{"negative port", func(c *Config) { c.Port = -1 }, "port -1", ""},
		{"big port", func(c *Config) { c.Port = 70000 }, "port 70000", ""},
		{"no token", func(c *Config) { c.Token = "" }, "token: empty", ""},
		{"token with space", func(c *Config) { c.Token = "a b" }, "token: contains spaces", ""},
		{"token with newline", func(c *Config) { c.Token = "a\nX-Evil: 1" }, "token: contains spaces", ""},
		{"negative heartbeat", func(c *Config) { c.Heartbeat = -time.Second }, "heartbeat -1s", ""},
		{"tiny heartbeat", func(c *Config) { c.Heartbeat = time.Millisecond }, "heartbeat 1ms: want at least", ""},
		{"negative dial timeout", func(c *Config) { c.DialTimeout = -1 }, "dial timeout", ""},
		{"negative backoff", func(c *Config) { c.BackoffInitial = -1 }, "backoff initial", ""},
		{"backoff inverted", func(c *Config) { c.BackoffInitial = time.Minute }, "exceeds backoff max", ""},
		// Over TLS the certificate is the credential: wss, no token.
		{"tls", func(c *Config) { c.TLS = &tls.Config{} }, "", "wss://10.0.0.1:23552/v1/link"},
		{"tls without a token", func(c *Config) { c.TLS = &tls.Config{}; c.Token = "" }, "", "wss://10.0.0.1:23552/v1/link"},
		{"tls, several addresses", func(c *Config) { c.TLS = &tls.Config{}; c.Address = "[::1]:81,b" }, "", "wss://[::1]:81/v1/link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.mod(&cfg)
			l, err := New(cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if l.url != tt.wantURL {
				t.Errorf("url = %q, want %q", l.url, tt.wantURL)
			}
			if auth := l.header.Get("Authorization"); (cfg.TLS == nil) != (auth == "Bearer "+cfg.Token) || (cfg.TLS != nil && auth != "") {
				t.Errorf("Authorization %q with TLS %v: want the token only without TLS", auth, cfg.TLS != nil)
			}
			if l.State() != StateDisconnected || l.SessionID() != "" {
				t.Errorf("fresh link: state %q session %q", l.State(), l.SessionID())
			}
			if l.cfg.Heartbeat != DefaultHeartbeat || l.cfg.DialTimeout != DefaultDialTimeout ||
				l.cfg.BackoffInitial != DefaultBackoffInitial || l.cfg.BackoffMax != DefaultBackoffMax {
				t.Errorf("defaults not applied: %+v", l.cfg)
			}
		})
	}
}

func TestHelloThenWelcome(t *testing.T) {
	tests := []struct {
		name     string
		address  string
		wantAddr string
	}{
		{"address from the connection", "", "127.0.0.1"},
		{"address from the handler", "10.1.2.3", "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			s := newLAN(t, func(n int, c *websocket.Conn) {
				welcome(t, c, n, 0)
				_ = drain(c, nil)
			})
			l, rec := newLink(t, s)
			rec.hello.Address = tt.address
			start(t, l)
			eventually(t, "connected", func() bool { return l.State() == StateConnected })

			if got := l.SessionID(); got != "s-1" {
				t.Errorf("SessionID = %q, want s-1", got)
			}
			states, _ := rec.snapshot()
			want := []string{StateConnecting, StateConnected}
			if len(states) != len(want) {
				t.Fatalf("states = %v, want %v", states, want)
			}
			for i, s := range states {
				if s.state != want[i] || s.err != nil {
					t.Errorf("state[%d] = %v, want %s without error", i, s, want[i])
				}
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if len(s.firsts) != 1 || s.firsts[0] != lanwire.TypeHello {
				t.Fatalf("first frames = %v, want [hello]", s.firsts)
			}
			got, wantHello := s.hellos[0], testHello()
			wantHello.Address = tt.wantAddr
			gb, _ := lanwire.Encode(lanwire.TypeHello, &got)
			wb, _ := lanwire.Encode(lanwire.TypeHello, &wantHello)
			if string(gb) != string(wb) {
				t.Errorf("hello = %s\nwant    %s", gb, wb)
			}
		})
	}
}

func TestFramesInOrderBadOnesSkipped(t *testing.T) {
	checkLeaks(t)
	// Good frames interleaved with everything a buggy LAN manager could
	// send; only the good ones may reach the handler, in order, and the
	// session must survive the bad ones.
	msgs := []struct {
		binary bool
		raw    string
	}{
		{false, `{"type":"needs","data":{"needs":[{"instance":"web1","module":"web"}]}}`},
		{false, `{"type":`},
		{false, `{"type":"grant","data":{"epoch":4,"need":{"instance":"web1","module":"web","protocols":["http"]}}}`},
		{false, `{"type":"grant","data":{"need":{"instance":"web1","module":"web"}}}`},
		{false, `{"type":"nope","data":{}}`},
		{false, `{"type":"deny","data":{"instance":"web2","reason":"taken"}}`},
		{false, `{"type":"claim","data":{"instance":"web1"}}`},
		{false, `{"type":"welcome","data":{"session":"again","heartbeatms":1000,"leasems":10000,"fencegracems":3000,"exitfencems":2000}}`},
		{true, `{"type":"stop","data":{"instance":"web1","reason":"binary"}}`},
		{false, `{"type":"stop","data":{"instance":"../etc","reason":"bad name"}}`},
		{false, `{"type":"stop","data":{"instance":"web1","reason":"x","extra":1}}`},
		{false, `{"type":"approved","data":{"service":{"instance":"web1","module":"web","machine":"m1","epoch":4,"address":"127.0.0.1","pid":3,"startedat":"2026-01-01T00:00:00Z","publishedat":"2026-01-01T00:00:00Z"}}}`},
		{false, `{"type":"error","data":{"ref":"claim","message":"no such need"}}`},
		{false, `{"type":"rejected","data":{"instance":"web1","epoch":4,"reason":"port closed"}}`},
		{false, `{"type":"stop","data":{"instance":"web1","reason":"no epoch"}}`},
		{false, `{"type":"stop","data":{"instance":"web1","epoch":4,"reason":"gone"}}`},
	}
	want := []string{"needs", "grant", "deny", "approved", "error", "rejected", "stop"}
	s := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 0)
		for _, m := range msgs {
			mt := websocket.TextMessage
			if m.binary {
				mt = websocket.BinaryMessage
			}
			if err := c.WriteMessage(mt, []byte(m.raw)); err != nil {
				t.Errorf("server write: %v", err)
			}
		}
		_ = drain(c, nil)
	})
	l, rec := newLink(t, s)
	start(t, l)
	eventually(t, "all good frames", func() bool {
		_, frames := rec.snapshot()
		return len(frames) >= len(want)
	})
	_, frames := rec.snapshot()
	if len(frames) != len(want) {
		t.Fatalf("got %d frames, want %d", len(frames), len(want))
	}
	for i, f := range frames {
		if f.typ != want[i] {
			t.Errorf("frame %d = %s, want %s", i, f.typ, want[i])
		}
	}
	if n := frames[0].payload.(*lanwire.Needs); len(n.Needs) != 1 || n.Needs[0].Instance != "web1" {
		t.Errorf("needs payload = %+v", n)
	}
	if g := frames[1].payload.(*lanwire.Grant); g.Need.Protocols[0] != "http" {
		t.Errorf("grant payload = %+v", g)
	}
	if e := frames[4].payload.(*lanwire.Error); e.Ref != "claim" || e.Message != "no such need" {
		t.Errorf("error payload = %+v", e)
	}
	if st := frames[6].payload.(*lanwire.Stop); st.Reason != "gone" {
		t.Errorf("stop payload = %+v", st)
	}
	if attempts, _ := s.counts(); attempts != 1 || l.State() != StateConnected || l.SessionID() != "s-1" {
		t.Errorf("after bad frames: attempts %d, state %s, session %q; want one session kept", attempts, l.State(), l.SessionID())
	}
}

func TestSend(t *testing.T) {
	checkLeaks(t)
	got := make(chan []byte, 64)
	s := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 0)
		_ = drain(c, got)
	})
	l, _ := newLink(t, s)

	if err := l.Send(lanwire.TypeClaim, &lanwire.Claim{Instance: "web1"}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Send before Run = %v, want ErrNotConnected", err)
	}

	bad := []struct {
		name    string
		typ     string
		payload any
		wantErr string
	}{
		{"hello is the link's", lanwire.TypeHello, &lanwire.Hello{}, "not a frame a master sends"},
		{"lan manager frame", lanwire.TypeGrant, &lanwire.Grant{}, "not a frame a master sends"},
		{"unknown type", "bogus", &lanwire.Claim{}, "not a frame a master sends"},
		{"nil payload", lanwire.TypeClaim, nil, "bad frame"},
		{"invalid instance", lanwire.TypeClaim, &lanwire.Claim{Instance: "../x"}, "bad frame"},
		{"payload of another type", lanwire.TypeClaim, &lanwire.Spawned{Instance: "w", PID: 3}, "payload is *lanwire.Spawned"},
		{"zero pid", lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w", Epoch: 1}, "positive pid"},
		{"no epoch", lanwire.TypeDown, &lanwire.Down{Instance: "w"}, "epoch 0"},
		{"negative capacity", lanwire.TypeCapacity, &lanwire.Capacity{Running: -1}, "negative"},
		{"not a payload", lanwire.TypeClaim, func() {}, "payload is func()"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			err := l.Send(tt.typ, tt.payload)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Send = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}

	start(t, l)
	eventually(t, "connected", func() bool { return l.State() == StateConnected })

	good := []struct {
		typ     string
		payload any
	}{
		{lanwire.TypeClaim, &lanwire.Claim{Instance: "web1"}},
		{lanwire.TypeSpawned, &lanwire.Spawned{Instance: "web1", Epoch: 2, PID: 77, Ports: lanwire.Ports{"http": 8080}}},
		{lanwire.TypeCapacity, lanwire.Capacity{MaxProcesses: 3, Running: 2}},
		{lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: "db1", Epoch: 3, Error: "no binary"}},
		{lanwire.TypeDown, &lanwire.Down{Instance: "web1", Epoch: 2, PID: 77, ExitCode: 1}},
	}
	for _, g := range good {
		if err := l.Send(g.typ, g.payload); err != nil {
			t.Fatalf("Send %s: %v", g.typ, err)
		}
	}
	for i, g := range good {
		select {
		case msg := <-got:
			typ, _, err := lanwire.Decode(msg)
			if err != nil || typ != g.typ {
				t.Errorf("server got frame %d = %s (%v), want %s", i, typ, err, g.typ)
			}
		case <-time.After(waitLimit):
			t.Fatalf("server did not get frame %d (%s)", i, g.typ)
		}
	}
}

func TestSendQueueFull(t *testing.T) {
	l, err := New(Config{Address: "127.0.0.1", Token: "t", Handler: &recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	// A session whose writer is stuck: nothing drains the queue.
	l.out = make(chan outFrame, 2)
	for i := range 2 {
		if err := l.Send(lanwire.TypeClaim, &lanwire.Claim{Instance: "web1"}); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if err := l.Send(lanwire.TypeClaim, &lanwire.Claim{Instance: "web1"}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Send on a full queue = %v, want ErrQueueFull", err)
	}
}

func TestReconnect(t *testing.T) {
	const sessions = 3
	tests := []struct {
		name string
		end  func(c *websocket.Conn)
	}{
		{"close frame", func(c *websocket.Conn) {
			msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "restarting")
			_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(waitLimit))
			_ = drain(c, nil)
		}},
		{"dropped connection", func(c *websocket.Conn) { c.NetConn().Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			s := newLAN(t, func(n int, c *websocket.Conn) {
				welcome(t, c, n, 0)
				if n < sessions {
					tt.end(c)
					return
				}
				_ = drain(c, nil)
			})
			l, rec := newLink(t, s)
			start(t, l)
			eventually(t, "third session", func() bool { return l.SessionID() == fmt.Sprintf("s-%d", sessions) })

			attempts, hellos := s.counts()
			if attempts != sessions || hellos != sessions {
				t.Errorf("attempts %d, hellos %d; want %d each", attempts, hellos, sessions)
			}
			rec.mu.Lock()
			calls := rec.helloCalls
			rec.mu.Unlock()
			if calls != sessions {
				t.Errorf("Handler.Hello called %d times, want %d", calls, sessions)
			}
			errs := rec.disconnects()
			if len(errs) != sessions-1 {
				t.Fatalf("disconnects = %v, want %d", errs, sessions-1)
			}
			for _, err := range errs {
				if err == nil {
					t.Errorf("disconnected without an error")
				}
			}
		})
	}
}

func TestUnauthorized(t *testing.T) {
	const refusals = 3
	checkLeaks(t)
	s := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 0)
		_ = drain(c, nil)
	})
	s.refuse = func(n int) bool { return n <= refusals }
	l, rec := newLink(t, s)
	start(t, l)
	eventually(t, "connected after the refusals", func() bool { return l.State() == StateConnected })

	errs := rec.disconnects()
	if len(errs) != refusals {
		t.Fatalf("disconnects = %v, want %d", errs, refusals)
	}
	for _, err := range errs {
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "refused the token") {
			t.Errorf("disconnect error = %v, want ErrUnauthorized", err)
		}
	}
	if got := l.SessionID(); got != fmt.Sprintf("s-%d", refusals+1) {
		t.Errorf("SessionID = %q", got)
	}
}

func TestWrongTokenKeepsRetrying(t *testing.T) {
	checkLeaks(t)
	s := newLAN(t, func(int, *websocket.Conn) { t.Error("a session with the wrong token") })
	l, rec := newLink(t, s, func(c *Config) { c.Token = "wrong" })
	start(t, l)
	eventually(t, "three refused attempts", func() bool { a, _ := s.counts(); return a >= 3 })
	for _, err := range rec.disconnects() {
		if !errors.Is(err, ErrUnauthorized) {
			t.Errorf("disconnect error = %v, want ErrUnauthorized", err)
		}
	}
	if l.State() == StateConnected {
		t.Errorf("connected with the wrong token")
	}
}

func TestStalledLANManager(t *testing.T) {
	checkLeaks(t)
	s := newLAN(t, func(n int, c *websocket.Conn) {
		if n == 1 {
			// The welcome's heartbeat overrides the configured minute; then
			// the LAN manager hangs: it reads nothing, so pings go unanswered.
			welcome(t, c, n, 100)
			<-t.Context().Done()
			return
		}
		welcome(t, c, n, 0)
		_ = drain(c, nil)
	})
	l, rec := newLink(t, s, func(c *Config) { c.Heartbeat = time.Minute })
	start(t, l)
	eventually(t, "second session", func() bool { return l.SessionID() == "s-2" })
	errs := rec.disconnects()
	if len(errs) != 1 {
		t.Fatalf("disconnects = %v, want 1", errs)
	}
	var ne net.Error
	if !errors.As(errs[0], &ne) || !ne.Timeout() {
		t.Errorf("disconnect error = %v, want a read timeout", errs[0])
	}
}

func TestOversizeFrameBreaksSession(t *testing.T) {
	checkLeaks(t)
	s := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 0)
		if n == 1 {
			// Over the read limit: the client must not buffer it.
			big := make([]byte, lanwire.MaxFrameSize+1)
			for i := range big {
				big[i] = ' '
			}
			_ = c.WriteMessage(websocket.TextMessage, big)
		}
		_ = drain(c, nil)
	})
	l, rec := newLink(t, s)
	start(t, l)
	eventually(t, "second session", func() bool { return l.SessionID() == "s-2" })
	errs := rec.disconnects()
	if len(errs) != 1 || !errors.Is(errs[0], websocket.ErrReadLimit) {
		t.Fatalf("disconnects = %v, want one read limit error", errs)
	}
}

func TestWelcomeRequired(t *testing.T) {
	tests := []struct {
		name    string
		first   func(t *testing.T, c *websocket.Conn)
		wantErr string
		dial    time.Duration
	}{
		{"needs first", func(t *testing.T, c *websocket.Conn) {
			send(t, c, lanwire.TypeNeeds, &lanwire.Needs{})
		}, `got a "needs" frame first`, 0},
		{"error first", func(t *testing.T, c *websocket.Conn) {
			send(t, c, lanwire.TypeError, &lanwire.Error{Ref: "hello", Message: "machine id taken"})
		}, "refused the hello: machine id taken", 0},
		{"garbage first", func(t *testing.T, c *websocket.Conn) {
			_ = c.WriteMessage(websocket.TextMessage, []byte("nonsense"))
		}, "bad frame", 0},
		{"binary first", func(t *testing.T, c *websocket.Conn) {
			_ = c.WriteMessage(websocket.BinaryMessage, []byte("{}"))
		}, "binary message", 0},
		{"nothing", func(t *testing.T, c *websocket.Conn) {}, "timeout", 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			s := newLAN(t, func(n int, c *websocket.Conn) {
				if n == 1 {
					tt.first(t, c)
					_ = drain(c, nil)
					return
				}
				welcome(t, c, n, 0)
				_ = drain(c, nil)
			})
			l, rec := newLink(t, s, func(c *Config) { c.DialTimeout = tt.dial })
			start(t, l)
			eventually(t, "a later session", func() bool { return l.State() == StateConnected })
			if l.SessionID() == "s-1" {
				t.Errorf("the session without a welcome was accepted")
			}
			errs := rec.disconnects()
			if len(errs) == 0 || !strings.Contains(errs[0].Error(), tt.wantErr) {
				t.Fatalf("disconnects = %v, want the first containing %q", errs, tt.wantErr)
			}
			if _, frames := rec.snapshot(); len(frames) != 0 {
				t.Errorf("handler got %v before any welcome", frames)
			}
		})
	}
}

func TestBadHello(t *testing.T) {
	checkLeaks(t)
	s := newLAN(t, func(int, *websocket.Conn) { t.Error("a session with a bad hello") })
	l, rec := newLink(t, s)
	rec.hello.MachineID = "no spaces allowed"
	start(t, l)
	eventually(t, "two failed attempts", func() bool { return len(rec.disconnects()) >= 2 })
	for _, err := range rec.disconnects() {
		if err == nil || !strings.Contains(err.Error(), "hello: machine") {
			t.Errorf("disconnect error = %v, want a hello error", err)
		}
	}
}

func TestCancel(t *testing.T) {
	tests := []struct {
		name string
		// session plays the LAN manager; ready says the link reached the
		// phase the test cancels in.
		session func(t *testing.T, n int, c *websocket.Conn, closed chan<- int)
		refuse  bool
		ready   func(l *Link, s *lanServer) bool
	}{
		{"connected", func(t *testing.T, n int, c *websocket.Conn, closed chan<- int) {
			welcome(t, c, n, 0)
			err := drain(c, nil)
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				closed <- ce.Code
			}
		}, false, func(l *Link, _ *lanServer) bool { return l.State() == StateConnected }},
		{"waiting for the welcome", func(t *testing.T, n int, c *websocket.Conn, closed chan<- int) {
			_ = drain(c, nil)
		}, false, func(_ *Link, s *lanServer) bool { _, h := s.counts(); return h == 1 }},
		{"backing off", nil, true, func(_ *Link, s *lanServer) bool { a, _ := s.counts(); return a >= 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			closed := make(chan int, 1)
			s := newLAN(t, func(n int, c *websocket.Conn) { tt.session(t, n, c, closed) })
			s.refuse = func(int) bool { return tt.refuse }
			l, rec := newLink(t, s, func(c *Config) {
				c.DialTimeout = time.Minute
				c.BackoffInitial = time.Millisecond
				c.BackoffMax = 50 * time.Millisecond
			})
			cancel := start(t, l)
			eventually(t, tt.name, func() bool { return tt.ready(l, s) })
			cancel()

			if l.State() != StateDisconnected || l.SessionID() != "" {
				t.Errorf("after cancel: state %q session %q", l.State(), l.SessionID())
			}
			// Stopping while backing off is no change: the link was already
			// disconnected, with the error of the last attempt.
			states, _ := rec.snapshot()
			if last := states[len(states)-1]; last.state != StateDisconnected || (last.err != nil && !tt.refuse) {
				t.Errorf("last state = %v, want disconnected without error", last)
			}
			if err := l.Send(lanwire.TypeClaim, &lanwire.Claim{Instance: "w"}); !errors.Is(err, ErrNotConnected) {
				t.Errorf("Send after cancel = %v, want ErrNotConnected", err)
			}
			if tt.name == "connected" {
				// The recorder holds no copy: the close says so.
				select {
				case code := <-closed:
					if code != lanwire.CloseNoCopies {
						t.Errorf("close code = %d, want %d", code, lanwire.CloseNoCopies)
					}
				case <-time.After(waitLimit):
					t.Errorf("server got no close frame")
				}
			}
		})
	}
}

func TestRunOnce(t *testing.T) {
	checkLeaks(t)
	s := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 0)
		_ = drain(c, nil)
	})
	l, _ := newLink(t, s)
	start(t, l)
	eventually(t, "connected", func() bool { return l.State() == StateConnected })
	if err := l.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Run = %v, want already running", err)
	}
}

func TestBackoff(t *testing.T) {
	const initial, limit = 250 * time.Millisecond, 10 * time.Second
	tests := []struct {
		prev, want time.Duration
	}{
		{0, initial},
		{initial, 2 * initial},
		{4 * time.Second, 8 * time.Second},
		{6 * time.Second, limit},
		{limit, limit},
	}
	for _, tt := range tests {
		if got := nextBackoff(tt.prev, initial, limit); got != tt.want {
			t.Errorf("nextBackoff(%v) = %v, want %v", tt.prev, got, tt.want)
		}
	}
	for _, d := range []time.Duration{0, 1, 2, initial, limit} {
		for range 100 {
			if got := jitter(d); got < d/2 || got > d {
				t.Fatalf("jitter(%v) = %v, want within [%v, %v]", d, got, d/2, d)
			}
		}
	}
}

// TestFailover: with several LAN managers, the link skips one that
// stands by (503) and one that is down, and moves on at once, with no
// backoff, when the one it used goes away.
func TestFailover(t *testing.T) {
	checkLeaks(t)
	standby := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"standby"}`, http.StatusServiceUnavailable)
	}))
	defer standby.Close()
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := down.Addr().String()
	down.Close()
	first := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 0)
		c.NetConn().Close() // the leader dies
	})
	second := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, 100+n, 0)
		_ = drain(c, nil)
	})
	addr := func(s *lanServer) string { return s.srv.Listener.Addr().String() }
	l, _ := newLink(t, first, func(c *Config) {
		c.Address = strings.Join([]string{addr(first), standby.Listener.Addr().String(), downAddr, addr(second)}, ",")
		// A backoff the test would notice.
		c.BackoffInitial, c.BackoffMax = time.Minute, time.Minute
	})
	start(t, l)
	eventually(t, "a session with the second LAN manager", func() bool { return l.SessionID() == "s-101" })
	if a, _ := first.counts(); a != 1 {
		t.Errorf("the dead leader was tried %d times, want 1", a)
	}
}

// TestStandbyNamesTheLeader: a standby's 503 names the leader; the link
// dials the leader itself, and when the leader cannot be reached from
// here, asks the standby to relay the link.
func TestStandbyNamesTheLeader(t *testing.T) {
	checkLeaks(t)
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := "http://" + down.Addr().String()
	down.Close()
	for _, tc := range []struct {
		name      string
		reachable bool
	}{{"leader reachable", true}, {"leader out of reach", false}} {
		t.Run(tc.name, func(t *testing.T) {
			leader := newLAN(t, func(n int, c *websocket.Conn) {
				welcome(t, c, n, 0)
				_ = drain(c, nil)
			})
			named := unreachable
			if tc.reachable {
				named = leader.srv.URL
			}
			var relayed atomic.Int32
			standby := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get(lanwire.RelayHeader) != "" {
					relayed.Add(1)
					leader.serve(w, r) // as if relayed to the leader
					return
				}
				w.Header().Set(lanwire.LeaderHeader, named)
				http.Error(w, `{"error":"standby"}`, http.StatusServiceUnavailable)
			}))
			defer standby.Close()
			l, _ := newLink(t, leader, func(c *Config) { c.Address = standby.Listener.Addr().String() })
			start(t, l)
			eventually(t, "a session with the leader", func() bool { return l.SessionID() == "s-1" })
			if got, want := relayed.Load(), map[bool]int32{true: 0, false: 1}[tc.reachable]; got != want {
				t.Errorf("relayed %d times, want %d", got, want)
			}
		})
	}
}

// TestSilentLANManagerIsPassedOver: with several addresses, one that
// accepts connections but never answers (a paused process) holds the
// link two heartbeats at most, not DialTimeout, before the next is tried.
func TestSilentLANManagerIsPassedOver(t *testing.T) {
	checkLeaks(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0") // never accepted: the kernel completes connects
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	lan := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 0)
		_ = drain(c, nil)
	})
	l, _ := newLink(t, lan, func(c *Config) {
		c.Address = silent.Addr().String() + "," + lan.srv.Listener.Addr().String()
		c.DialTimeout = time.Minute
	})
	began := time.Now()
	start(t, l)
	eventually(t, "a session with the answering LAN manager", func() bool { return l.SessionID() == "s-1" })
	if took := time.Since(began); took > 30*time.Second {
		t.Fatalf("linked after %v: the silent LAN manager held the link for DialTimeout", took)
	}
}

// TestURLs: the LAN managers' base URLs, https with TLS.
func TestURLs(t *testing.T) {
	for _, tt := range []struct {
		addresses string
		tls       bool
		want      string
	}{
		{"10.0.0.1", false, "http://10.0.0.1:9"},
		{"10.0.0.1", true, "https://10.0.0.1:9"},
		{"a, b:80,[::1]:81", true, "https://a:9 https://b:80 https://[::1]:81"},
		{"::1", true, "https://[::1]:9"},
	} {
		got, err := URLs(tt.addresses, 9, tt.tls)
		if err != nil || strings.Join(got, " ") != tt.want {
			t.Errorf("URLs(%q, 9, %v) = %q, %v; want %s", tt.addresses, tt.tls, got, err, tt.want)
		}
	}
	if _, err := URLs("a,a:9", 9, true); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("URLs(a,a:9): %v, want given twice", err)
	}
}

// TestTLSLinkNotSentToPlainLeader: over TLS, a standby that names a
// leader at http:// is not followed (nor asked to relay): the link would
// leave TLS.
func TestTLSLinkNotSentToPlainLeader(t *testing.T) {
	checkLeaks(t)
	var plainDialled, relayed atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		plainDialled.Add(1)
		http.Error(w, "plain", http.StatusUnauthorized)
	}))
	defer plain.Close()
	var attempts atomic.Int32
	standby := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		if r.Header.Get(lanwire.RelayHeader) != "" {
			relayed.Add(1)
		}
		w.Header().Set(lanwire.LeaderHeader, plain.URL)
		http.Error(w, `{"error":"standby"}`, http.StatusServiceUnavailable)
	}))
	defer standby.Close()
	pool := x509.NewCertPool()
	pool.AddCert(standby.Certificate())
	rec := &recorder{hello: testHello()}
	l, err := New(Config{Address: standby.Listener.Addr().String(), Handler: rec, TLS: &tls.Config{RootCAs: pool},
		BackoffInitial: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start(t, l)
	eventually(t, "three dials of the standby", func() bool { return attempts.Load() >= 3 })
	for _, err := range rec.disconnects() {
		if !errors.Is(err, ErrStandby) {
			t.Errorf("disconnect error = %v, want ErrStandby", err)
		}
	}
	if n, r := plainDialled.Load(), relayed.Load(); n != 0 || r != 0 {
		t.Errorf("the plain leader was dialled %d times, the standby asked to relay %d times; want neither", n, r)
	}
	if l.State() == StateConnected {
		t.Error("connected")
	}
}
