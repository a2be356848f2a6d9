package lanlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/internal/boottime"
	"github.com/allex-go/allex/lanwire"
)

// Link states reported by State and Handler.LinkState.
const (
	StateConnecting   = "connecting"
	StateConnected    = "connected"
	StateDisconnected = "disconnected"
)

// Defaults for the zero Config fields.
const (
	DefaultHeartbeat      = 5 * time.Second
	DefaultBackoffInitial = 250 * time.Millisecond
	DefaultBackoffMax     = 10 * time.Second
	DefaultDialTimeout    = 5 * time.Second
)

// QueueSize bounds the frames Send may queue ahead of the network.
const QueueSize = 4096

const (
	// A session that stayed up this long was healthy, so the next failure
	// starts the backoff from the beginning again.
	backoffResetAfter = 10 * time.Second
	// minHeartbeat keeps a silly welcome from turning pings into a busy loop.
	minHeartbeat = 10 * time.Millisecond
	// closeWait is how long a clean stop waits for the LAN manager to
	// answer our close frame before dropping the connection.
	closeWait = time.Second
)

var (
	// ErrNotConnected is returned by Send when no session is open (being
	// welcomed or welcomed); the next session's hello carries the state
	// instead.
	ErrNotConnected = errors.New("lanlink: not connected to the LAN manager")
	// ErrQueueFull is returned by Send when the session's queue is full.
	ErrQueueFull = errors.New("lanlink: send queue full")
	// ErrUnauthorized is wrapped by the session error when the LAN manager
	// answers the upgrade with HTTP 401.
	ErrUnauthorized = errors.New("LAN manager refused the token (HTTP 401)")
	// ErrRefused is wrapped by the session error when the LAN manager
	// answers the hello with an error (another master is this machine id).
	ErrRefused = errors.New("LAN manager refused the hello")
	// ErrStandby is wrapped when a standby LAN manager answered (HTTP 503)
	// and could not relay the link: a leader is being elected.
	ErrStandby = errors.New("a standby LAN manager answered: no leader reachable yet")
)

// standbyRetries is how many standby answers in a row are retried after
// BackoffInitial: an election takes about the leader's etcd TTL, and a
// master that retries at once is linked to the new leader a few hundred
// milliseconds after it leads. Then the backoff grows as for any failure.
const standbyRetries = 12

// Handler is the agent's side of the link. Its methods should return
// quickly, because the session does not read while they run; all but
// HoldsCopies are called from the goroutine running Run, one at a time.
type Handler interface {
	// Hello builds the hello frame for each new session. An empty Address is
	// filled with the local IP of the connection. Running lists the copies
	// the master holds, for reconciliation: they are not restarted.
	Hello() lanwire.Hello
	// Welcomed starts a session; its lease runs from helloSent (on
	// Config.Clock), when the hello was written.
	Welcomed(w *lanwire.Welcome, helloSent time.Duration)
	// Renewed says the LAN manager answered the ping sent at sent (on
	// Config.Clock): the lease runs from then.
	Renewed(sent time.Duration)
	// HandleFrame gets each valid frame from the LAN manager in arrival
	// order; payload is the pointer lanwire.Decode returned (*lanwire.Needs,
	// *lanwire.Grant, *lanwire.Error, ...). The welcome is not passed on.
	HandleFrame(typ string, payload any)
	// LinkState reports StateConnecting, StateConnected and
	// StateDisconnected; err says why a session ended or could not start,
	// and is nil when Run stops because its context is done.
	LinkState(state string, err error)
	// HoldsCopies says whether a copy may still run on this master; it
	// picks the close code, and keeps a connection that could not be
	// closed cleanly open (lanwire/fencing.go). Any goroutine may call it.
	HoldsCopies() bool
}

// Config configures a Link. Zero durations and port take the defaults.
type Config struct {
	// Address is the LAN manager's host name or IP, or several LAN
	// managers' (one leads, the others stand by), comma-separated, each
	// with an optional :port.
	Address string
	// Port is the LAN managers' port where an address gives none; 0
	// means lanwire.DefaultPort.
	Port int
	// Token is sent as "Authorization: Bearer <token>" when TLS is nil
	// (a LAN manager run with -insecure).
	Token string
	// TLS, when set, links over wss:// with it: the master's certificate
	// is its credential (package lancreds).
	TLS *tls.Config
	// Ready, when set, is waited for before each dial (a master that has
	// not joined yet has no certificate to link with).
	Ready   func(context.Context) error
	Handler Handler
	Logger  hclog.Logger
	// Heartbeat is the ping period; the welcome's heartbeatms overrides it.
	// The read deadline is three heartbeats.
	Heartbeat time.Duration
	// BackoffInitial and BackoffMax bound the jittered reconnect delay.
	BackoffInitial, BackoffMax time.Duration
	// DialTimeout bounds the dial and upgrade, and then the wait for the
	// welcome.
	DialTimeout time.Duration
	// Clock is the boot-time clock pings carry (default boottime.Now).
	Clock func() time.Duration
}

// Link is the master's connection to the LAN manager.
type Link struct {
	cfg Config
	log hclog.Logger
	// urls are the LAN managers' link URLs; the link tries them in turn
	// from url, the last one that worked or is being tried.
	urls   []string
	url    string
	header http.Header
	dialer *websocket.Dialer

	mu        sync.Mutex
	running   bool
	state     string
	sessionID string
	out       chan outFrame // queue of the welcomed session, nil when none
	// last are the timings of the last welcome.
	last lanwire.Timings
	// lingering counts connections held open after a close frame could
	// not be written (see closeConn).
	lingering sync.WaitGroup
}

// timings returns the last welcome's timings, or the defaults.
func (l *Link) timings() lanwire.Timings {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == (lanwire.Timings{}) {
		return lanwire.DefaultTimings()
	}
	return l.last
}

// New checks cfg and returns a Link; Run starts it.
func New(cfg Config) (*Link, error) {
	if cfg.Handler == nil {
		return nil, errors.New("lanlink: config: no handler")
	}
	if cfg.Port == 0 {
		cfg.Port = lanwire.DefaultPort
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("lanlink: config: port %d: want 1-65535", cfg.Port)
	}
	urls, err := URLs(cfg.Address, cfg.Port, cfg.TLS != nil)
	if err != nil {
		return nil, fmt.Errorf("lanlink: config: address: %w", err)
	}
	for i := range urls {
		urls[i] = "ws" + strings.TrimPrefix(urls[i], "http") + lanwire.Path
	}
	header := http.Header{}
	if cfg.TLS == nil {
		if err := checkToken(cfg.Token); err != nil {
			return nil, fmt.Errorf("lanlink: config: token: %w", err)
		}
		header.Set("Authorization", "Bearer "+cfg.Token)
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"heartbeat", &cfg.Heartbeat, DefaultHeartbeat},
		{"backoff initial", &cfg.BackoffInitial, DefaultBackoffInitial},
		{"backoff max", &cfg.BackoffMax, DefaultBackoffMax},
		{"dial timeout", &cfg.DialTimeout, DefaultDialTimeout},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return nil, fmt.Errorf("lanlink: config: %s %v: must not be negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.Heartbeat < minHeartbeat {
		return nil, fmt.Errorf("lanlink: config: heartbeat %v: want at least %v", cfg.Heartbeat, minHeartbeat)
	}
	if cfg.BackoffInitial > cfg.BackoffMax {
		return nil, fmt.Errorf("lanlink: config: backoff initial %v exceeds backoff max %v", cfg.BackoffInitial, cfg.BackoffMax)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = boottime.Now
	}
	return &Link{
		cfg:    cfg,
		log:    cfg.Logger,
		urls:   urls,
		url:    urls[0],
		header: header,
		dialer: &websocket.Dialer{HandshakeTimeout: cfg.DialTimeout, TLSClientConfig: cfg.TLS},
		state:  StateDisconnected,
	}, nil
}

// URLs makes the base URL (https://host:port, or http:// without TLS)
// of each comma-separated address, port being the port of those that
// give none.
func URLs(addresses string, port int, tls bool) ([]string, error) {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	var urls []string
	for _, a := range strings.Split(addresses, ",") {
		a = strings.TrimSpace(a)
		p := port
		if h, ps, err := net.SplitHostPort(a); err == nil {
			n, err := strconv.Atoi(ps)
			if err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("%q: port %q: want 1-65535", a, ps)
			}
			a, p = h, n
		}
		host, err := checkAddress(a)
		if err != nil {
			return nil, err
		}
		u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(p))}
		if slices.Contains(urls, u.String()) {
			return nil, fmt.Errorf("%s given twice", u.Host)
		}
		urls = append(urls, u.String())
	}
	return urls, nil
}

func checkAddress(a string) (string, error) {
	if a == "" {
		return "", errors.New("empty")
	}
	h := strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.String(), nil
	}
	// Not an IP, so it must be a plain host name; anything else would be
	// silently reinterpreted by URL parsing (ports, paths, user info).
	if strings.ContainsAny(h, ":/@?#[] \t\r\n") {
		return "", fmt.Errorf("%q is neither an IP nor a host name", a)
	}
	return h, nil
}

func checkToken(t string) error {
	if t == "" {
		return errors.New("empty (the LAN manager requires a bearer token)")
	}
	for _, c := range t {
		if c <= ' ' || c == 0x7f {
			return errors.New("contains spaces or control characters")
		}
	}
	return nil
}

// State returns the current link state.
func (l *Link) State() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// SessionID returns the id of the welcomed session, or "" when there is none.
func (l *Link) SessionID() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sessionID
}

// masterFrame reports whether the agent may Send typ; hello belongs to the
// Link.
func masterFrame(typ string) bool {
	switch typ {
	case lanwire.TypeClaim, lanwire.TypeDecline, lanwire.TypeSpawned, lanwire.TypeSpawnFailed, lanwire.TypeDown, lanwire.TypeCapacity:
		return true
	}
	return false
}

// Send queues a claim, decline, spawned, spawn_failed, down or capacity frame for the
// current session without waiting for the network. The frame is checked
// the way the LAN manager will check it, so a bad one fails here; it is
// encoded by the session's writer, so the caller must not change payload
// afterwards. A session's queue opens just before its hello is built, so
// what is sent after that follows the hello; frames queued before the
// welcome go out after it. It returns ErrNotConnected when no session is
// open and ErrQueueFull when the queue is full. Frames still queued when a
// session ends are dropped: the next hello carries the state instead.
func (l *Link) Send(typ string, payload any) error {
	if !masterFrame(typ) {
		return fmt.Errorf("lanlink: send %q: not a frame a master sends (want claim, spawned, spawn_failed, down or capacity)", typ)
	}
	if err := lanwire.Check(typ, payload); err != nil {
		return fmt.Errorf("lanlink: send %q: %w", typ, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.out == nil {
		return ErrNotConnected
	}
	select {
	case l.out <- outFrame{typ, payload}:
		return nil
	default:
		return fmt.Errorf("lanlink: send %q: %w (%d frames)", typ, ErrQueueFull, cap(l.out))
	}
}

// Run connects to the LAN manager and keeps reconnecting until ctx is done,
// then closes the session cleanly and returns nil. A Link runs once at a
// time.
func (l *Link) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return errors.New("lanlink: already running")
	}
	l.running = true
	l.mu.Unlock()
	defer func() {
		l.lingering.Wait()
		l.mu.Lock()
		l.running = false
		l.mu.Unlock()
	}()

	backoff := time.Duration(0)
	tried := 0   // addresses that failed since a session lasted
	standby := 0 // standby answers in a row
	for {
		if l.cfg.Ready != nil && l.cfg.Ready(ctx) != nil {
			l.setState(StateDisconnected, nil)
			return nil
		}
		l.setState(StateConnecting, nil)
		lasted, err := l.session(ctx)
		if ctx.Err() != nil {
			l.setState(StateDisconnected, nil)
			return nil
		}
		l.setState(StateDisconnected, err)
		switch {
		case errors.Is(err, ErrUnauthorized) && l.cfg.TLS != nil:
			l.log.Error("LAN manager refused this master's certificate (a LAN manager with another CA, or not joined)", "url", l.url, "error", err)
			backoff = l.cfg.BackoffMax
		case errors.Is(err, ErrUnauthorized):
			l.log.Error("LAN manager refused the token; check the master's LAN token", "url", l.url, "error", err)
			backoff = l.cfg.BackoffMax
		case errors.Is(err, ErrRefused):
			l.log.Error("LAN manager refused this master", "url", l.url, "error", err)
			backoff = l.cfg.BackoffMax
		case lasted > backoffResetAfter:
			l.log.Warn("LAN link lost", "url", l.url, "after", lasted, "error", err)
			backoff = l.cfg.BackoffInitial
		case errors.Is(err, ErrStandby) && standby < standbyRetries:
			l.log.Debug("LAN link: a standby answered; the leader is being elected", "url", l.url, "error", err)
			standby++
			backoff = l.cfg.BackoffInitial
		default:
			l.log.Warn("LAN link failed", "url", l.url, "error", err)
			backoff = nextBackoff(backoff, l.cfg.BackoffInitial, l.cfg.BackoffMax)
			// A master whose copies run on its lease retries every
			// heartbeat at most: backing off further would fence them on
			// a LAN manager that is back (restarted) but not yet dialled.
			if l.cfg.Handler.HoldsCopies() {
				backoff = min(backoff, l.timings().Heartbeat())
			}
		}
		if lasted > backoffResetAfter {
			tried = 0
		}
		if !errors.Is(err, ErrStandby) {
			standby = 0
		}
		wait := jitter(backoff)
		if tried++; len(l.urls) > 1 {
			// Another LAN manager may lead now: try each address at
			// once, and back off only once all have failed.
			l.url = l.urls[(slices.Index(l.urls, l.url)+1)%len(l.urls)]
			if tried < len(l.urls) {
				wait = 0
			} else {
				tried = 0
			}
		}
		l.log.Debug("LAN link reconnecting", "url", l.url, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			l.setState(StateDisconnected, nil)
			return nil
		case <-t.C:
		}
	}
}

// nextBackoff doubles the previous delay within [initial, max].
func nextBackoff(prev, initial, limit time.Duration) time.Duration {
	if prev < initial {
		return initial
	}
	if prev > limit/2 {
		return limit
	}
	return prev * 2
}

// jitter spreads reconnects of many masters after a LAN manager restart:
// the result is in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

func (l *Link) setState(state string, err error) {
	l.mu.Lock()
	changed := l.state != state || err != nil
	l.state = state
	if state != StateConnected {
		l.sessionID = ""
	}
	l.mu.Unlock()
	if changed {
		l.cfg.Handler.LinkState(state, err)
	}
}

// session runs one connection until it fails or ctx is done. It returns how
// long the session was welcomed and why it ended.
func (l *Link) session(ctx context.Context) (time.Duration, error) {
	conn, err := l.dial(ctx)
	if err != nil {
		return 0, err
	}
	conn.SetReadLimit(lanwire.MaxFrameSize)

	// The handshake's reads and writes only know deadlines; closing the
	// connection is what makes a stop interrupt them (the agent stops the
	// link only once its LAN children are gone).
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	// The queue opens before the hello is built: the hello is a snapshot
	// of the master's copies, and what changes after it (a copy that ends
	// meanwhile, say) must follow it on this session, not be dropped.
	out := make(chan outFrame, QueueSize)
	l.mu.Lock()
	l.out = out
	l.mu.Unlock()
	welcome, helloSent, err := l.handshake(conn)
	if err != nil || ctx.Err() != nil {
		l.mu.Lock()
		l.out = nil
		l.mu.Unlock()
	}
	if !stop() {
		return 0, fmt.Errorf("handshake: %w", ctx.Err())
	}
	if err != nil {
		// The LAN manager may have taken the hello: end as a welcomed
		// session would.
		l.closeConn(conn, l.timings())
		return 0, err
	}
	l.mu.Lock()
	l.last = welcome.Timings
	l.mu.Unlock()
	heartbeat := l.cfg.Heartbeat
	if welcome.HeartbeatMS > 0 {
		heartbeat = max(time.Duration(welcome.HeartbeatMS)*time.Millisecond, minHeartbeat)
	}
	readWait := 3 * heartbeat
	conn.SetPongHandler(func(data string) error {
		// The pong echoes the ping's send time: the lease runs from
		// then, however late the pong arrived.
		if sent, ok := lanwire.ParsePingPayload([]byte(data)); ok && sent >= helloSent && sent <= l.cfg.Clock() {
			l.cfg.Handler.Renewed(sent)
		}
		return conn.SetReadDeadline(time.Now().Add(readWait))
	})
	// The LAN manager's own pings prove it alive as well as its pongs do.
	conn.SetPingHandler(func(data string) error {
		if err := conn.SetReadDeadline(time.Now().Add(readWait)); err != nil {
			return err
		}
		// A failed pong means a broken connection, which the writer and
		// the next read report; failing here would only hide their cause.
		_ = conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(readWait))
		return nil
	})

	start := time.Now()
	l.mu.Lock()
	l.sessionID = welcome.SessionID
	l.mu.Unlock()
	l.log.Info("LAN link connected", "url", l.url, "session", welcome.SessionID, "heartbeat", heartbeat, "lease", welcome.Lease())
	l.cfg.Handler.Welcomed(welcome, helloSent)
	l.setState(StateConnected, nil)

	var cause firstError
	readDone := make(chan struct{})
	writerEnded := make(chan struct{}) // the writer has stopped writing
	writerDone := make(chan struct{})  // and the reader is awake
	go func() {
		defer close(writerDone)
		if err := l.writeLoop(ctx, conn, out, heartbeat, readDone); err != nil {
			cause.set(err)
		}
		close(writerEnded)
		// The session is over (the connection is only closed by
		// closeConn): wake the reader.
		stopReading(conn, readDone)
	}()

	cause.set(l.readLoop(conn, readWait, writerEnded))
	l.mu.Lock()
	l.out = nil
	l.mu.Unlock()
	close(readDone)
	// Unblocks a writer stuck on a LAN manager that stopped reading.
	_ = conn.NetConn().SetWriteDeadline(time.Now())
	<-writerDone
	l.closeConn(conn, welcome.Timings)
	return time.Since(start), cause.get()
}

// closeConn ends a welcomed session's connection with a close frame that
// tells the LAN manager whether copies may still run here. A connection
// that ends without one means to the LAN manager that this master's
// process is gone, so its copies are counted dead after the exit fence:
// when the close frame cannot be written and copies may run, the
// connection is held open until they are gone (the fence stops them
// within the lease, since nothing renews it on this connection).
func (l *Link) closeConn(conn *websocket.Conn, t lanwire.Timings) {
	code, text := lanwire.CloseNoCopies, "no copies"
	if l.cfg.Handler.HoldsCopies() {
		code, text = lanwire.CloseAlive, "master alive"
	}
	msg := websocket.FormatCloseMessage(code, text)
	if err := conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeWait)); err == nil || code == lanwire.CloseNoCopies {
		conn.Close()
		return
	}
	l.log.Warn("LAN link: cannot send the close frame; holding the connection until no LAN child runs", "lease", t.Lease())
	l.lingering.Add(1)
	go func() {
		defer l.lingering.Done()
		defer conn.Close()
		deadline := time.Now().Add(t.Lease())
		for l.cfg.Handler.HoldsCopies() && time.Now().Before(deadline) {
			time.Sleep(min(t.Heartbeat(), time.Until(deadline)))
		}
	}()
}

// stopReading wakes the reader until it has returned (readDone closed):
// the reader, and the LAN manager's pings, move the read deadline on, so
// one deadline in the past may be overtaken.
func stopReading(conn *websocket.Conn, readDone <-chan struct{}) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		_ = conn.NetConn().SetReadDeadline(time.Now())
		select {
		case <-readDone:
			return
		case <-t.C:
		}
	}
}

// firstError keeps the error that ended a session: whichever of the reader
// and the writer fails first, since the other then fails on the closed
// connection.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// dial connects to l.url. A standby answers 503 naming the leader: the
// leader is dialled at once, and when it cannot be reached from here,
// the standby is dialled again and asked to relay the link to it. So a
// master is heard by the LAN manager that decides its grants as long as
// it reaches some LAN manager that reaches the leader.
func (l *Link) dial(ctx context.Context) (*websocket.Conn, error) {
	conn, resp, err := l.dialURL(ctx, l.url, l.header)
	if err == nil {
		return conn, nil
	}
	leader := ""
	if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
		leader = resp.Header.Get(lanwire.LeaderHeader)
	}
	lu, lerr := leaderLinkURL(leader)
	if lerr == nil && l.cfg.TLS != nil && !strings.HasPrefix(lu, "wss://") {
		lerr = fmt.Errorf("the leader %q does not speak TLS", leader)
	}
	if lerr != nil {
		return nil, dialError(l.url, resp, err)
	}
	if lu != l.url {
		// A leader that does not answer within a heartbeat is taken as
		// out of reach: the relay must be up well within the lease.
		dctx, cancel := context.WithTimeout(ctx, min(l.cfg.DialTimeout, l.timings().Heartbeat()))
		conn, resp, err := l.dialURL(dctx, lu, l.header)
		cancel()
		switch {
		case err == nil:
			l.log.Debug("linked to the leader a standby named", "standby", l.url, "leader", lu)
			if slices.Contains(l.urls, lu) {
				l.url = lu
			}
			return conn, nil
		case resp != nil:
			return nil, dialError(lu, resp, err) // it answered: no relay
		}
		l.log.Debug("the leading LAN manager cannot be reached from here; asking a standby to relay", "standby", l.url, "leader", lu, "error", err)
	}
	h := l.header.Clone()
	h.Set(lanwire.RelayHeader, "1")
	conn, resp, err = l.dialURL(ctx, l.url, h)
	if err != nil {
		return nil, dialError(l.url, resp, err)
	}
	l.log.Info("LAN link relayed by a standby LAN manager", "standby", l.url, "leader", lu)
	return conn, nil
}

func (l *Link) dialURL(ctx context.Context, u string, h http.Header) (*websocket.Conn, *http.Response, error) {
	dctx, cancel := context.WithTimeout(ctx, l.dialTimeout())
	defer cancel()
	return l.dialer.DialContext(dctx, u, h)
}

// dialTimeout bounds a dial and upgrade. With several LAN managers, one
// that accepts but does not answer (paused, overloaded) is given two
// heartbeats, not DialTimeout: the others must be tried well within the
// lease.
func (l *Link) dialTimeout() time.Duration {
	if len(l.urls) > 1 {
		return min(l.cfg.DialTimeout, 2*l.timings().Heartbeat())
	}
	return l.cfg.DialTimeout
}

// leaderLinkURL is the link URL of a leader named by its http(s) URL.
func leaderLinkURL(leader string) (string, error) {
	base := lanwire.LeaderBase(leader)
	if base == "" {
		return "", fmt.Errorf("no leader URL in %q", leader)
	}
	return "ws" + strings.TrimPrefix(base, "http") + lanwire.Path, nil
}

func dialError(u string, resp *http.Response, err error) error {
	if resp == nil {
		return fmt.Errorf("dial %s: %w", u, err)
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return fmt.Errorf("dial %s: %w", u, ErrUnauthorized)
	case http.StatusForbidden:
		return fmt.Errorf("dial %s: %w (HTTP 403: revoked)", u, ErrRefused)
	case http.StatusServiceUnavailable:
		return fmt.Errorf("dial %s: %w (leader %q)", u, ErrStandby, resp.Header.Get(lanwire.LeaderHeader))
	}
	return fmt.Errorf("dial %s: upgrade refused with HTTP %s: %w", u, resp.Status, err)
}

// handshake sends the hello and waits for the welcome; it returns when
// the hello was sent, on Config.Clock.
func (l *Link) handshake(conn *websocket.Conn) (*lanwire.Welcome, time.Duration, error) {
	hello := l.cfg.Handler.Hello()
	if hello.Address == "" {
		ap, err := netip.ParseAddrPort(conn.LocalAddr().String())
		if err != nil {
			return nil, 0, fmt.Errorf("hello: local address %q: %w", conn.LocalAddr(), err)
		}
		hello.Address = ap.Addr().Unmap().WithZone("").String()
	}
	if err := hello.Validate(); err != nil {
		return nil, 0, fmt.Errorf("hello: %w", err)
	}
	b, err := lanwire.Encode(lanwire.TypeHello, &hello)
	if err != nil {
		return nil, 0, fmt.Errorf("hello: %w", err)
	}
	deadline := time.Now().Add(l.cfg.DialTimeout)
	if err := conn.SetWriteDeadline(deadline); err != nil {
		return nil, 0, fmt.Errorf("hello: %w", err)
	}
	sent := l.cfg.Clock()
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return nil, 0, fmt.Errorf("hello: write: %w", err)
	}
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, 0, fmt.Errorf("welcome: %w", err)
	}
	mt, msg, err := conn.ReadMessage()
	if err != nil {
		return nil, 0, fmt.Errorf("welcome: read: %w", err)
	}
	if mt != websocket.TextMessage {
		return nil, 0, fmt.Errorf("welcome: got a binary message, want a welcome frame")
	}
	typ, payload, err := lanwire.Decode(msg)
	if err != nil {
		return nil, 0, fmt.Errorf("welcome: %w", err)
	}
	switch p := payload.(type) {
	case *lanwire.Welcome:
		return p, sent, nil
	case *lanwire.Error:
		return nil, 0, fmt.Errorf("%w: %s", ErrRefused, p.Message)
	}
	return nil, 0, fmt.Errorf("welcome: got a %q frame first, want welcome", typ)
}

// lanManagerFrame reports whether typ is handed to the handler during a
// session; the welcome only opens one.
func lanManagerFrame(typ string) bool {
	switch typ {
	case lanwire.TypeNeeds, lanwire.TypeGrant, lanwire.TypeDeny, lanwire.TypeApproved,
		lanwire.TypeRejected, lanwire.TypeStop, lanwire.TypeError:
		return true
	}
	return false
}

// readLoop delivers frames until the connection breaks. A bad frame is the
// LAN manager's bug, not a broken connection, so it is logged and skipped.
func (l *Link) readLoop(conn *websocket.Conn, readWait time.Duration, writerDone <-chan struct{}) error {
	for {
		// Frames may keep coming from a buffer with no read to fail:
		// the writer's end is the session's end.
		select {
		case <-writerDone:
			return errors.New("read: the session is ending")
		default:
		}
		if err := conn.SetReadDeadline(time.Now().Add(readWait)); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		mt, msg, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if mt != websocket.TextMessage {
			l.log.Warn("LAN manager sent a binary message; skipped", "bytes", len(msg))
			continue
		}
		typ, payload, err := lanwire.Decode(msg)
		if err != nil {
			l.log.Warn("LAN manager sent a bad frame; skipped", "type", typ, "error", err)
			continue
		}
		if !lanManagerFrame(typ) {
			l.log.Warn("LAN manager sent a frame not meant for a master; skipped", "type", typ)
			continue
		}
		l.cfg.Handler.HandleFrame(typ, payload)
	}
}

// outFrame is a frame queued by Send, encoded by the writer so that the
// callers (supervisors reporting their children) do not run the JSON
// encoder on their own goroutines.
type outFrame struct {
	typ     string
	payload any
}

// writeLoop is the session's only writer: queued frames, pings, and the
// close frame when ctx is done.
func (l *Link) writeLoop(ctx context.Context, conn *websocket.Conn, out <-chan outFrame, heartbeat time.Duration, readDone <-chan struct{}) error {
	ping := time.NewTicker(heartbeat)
	defer ping.Stop()
	writeWait := 3 * heartbeat
	for {
		select {
		case <-readDone:
			return nil
		case <-ctx.Done():
			// What was queued (the last down reports) goes out before the
			// session ends; then the reader is woken and the session
			// closes the connection with its close frame.
			l.drain(conn, out, writeWait)
			return nil
		case f := <-out:
			if err := l.write(conn, f, writeWait); err != nil {
				return err
			}
		case <-ping.C:
			// The payload is the send time: its pong renews the lease
			// from then.
			if err := conn.WriteControl(websocket.PingMessage, lanwire.PingPayload(l.cfg.Clock()), time.Now().Add(writeWait)); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
		}
	}
}

// write sends one queued frame.
func (l *Link) write(conn *websocket.Conn, f outFrame, writeWait time.Duration) error {
	// Checked by Send: only a frame over the size limit can fail.
	b, err := lanwire.Encode(f.typ, f.payload)
	if err == nil && len(b) > lanwire.MaxFrameSize {
		err = fmt.Errorf("%d bytes exceeds %d", len(b), lanwire.MaxFrameSize)
	}
	if err != nil {
		l.log.Error("dropping a frame that cannot be sent", "type", f.typ, "error", err)
		return nil
	}
	if err := conn.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// drain writes what is queued, until the queue is empty or a write fails.
func (l *Link) drain(conn *websocket.Conn, out <-chan outFrame, writeWait time.Duration) {
	for {
		select {
		case f := <-out:
			if l.write(conn, f, writeWait) != nil {
				return
			}
		default:
			return
		}
	}
}
