package lanmanager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/lanmanager/connguard"
	"github.com/allex-go/allex/lanmanager/lanstate"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// DefaultAddr is loopback only: exposing the LAN manager to the LAN is a
// deliberate choice (-addr :23552), not an accident of defaults.
const DefaultAddr = "127.0.0.1:23552"

// DefaultOfferWindow is Config.OfferWindow's default.
const DefaultOfferWindow = lanstate.DefaultOfferWindow

// DefaultMaxPlacing and DefaultDeclineHold are Config.MaxPlacing's and
// Config.DeclineHold's defaults.
const (
	DefaultMaxPlacing  = lanstate.DefaultMaxPlacing
	DefaultDeclineHold = lanstate.DefaultDeclineHold
)

// Config configures a Server. Zero durations take the defaults.
type Config struct {
	// Addr to listen on; default DefaultAddr. "127.0.0.1:0" picks a port.
	Addr string
	// Listener, when set, is served instead of listening on Addr; Run
	// closes it. A standby hands its listener over this way, so no
	// connection is refused while it becomes the leader.
	Listener net.Listener
	// Token is the LAN manager's own bearer token: admin calls, and over
	// plain HTTP masters' links. Required.
	Token string
	// TLS, when set, serves HTTPS and WSS with it (lanpki.ServerConfig);
	// nil serves plain HTTP (-insecure, or -dev on loopback).
	TLS *tls.Config
	// CA signs masters' certificates on join and renewal; nil (or a CA
	// without its key) issues none.
	CA *lanpki.CA
	// CertTTL is a master certificate's lifetime (default DefaultCertTTL);
	// masters renew at two thirds of it.
	CertTTL time.Duration
	// DataDir holds the bbolt database; used when Store is nil.
	DataDir string
	// Store overrides the on-disk store (e.g. store.NewMemory()). Run closes it.
	Store store.Store
	// NeedsFiles are layered needs files merged at startup (later wins).
	NeedsFiles []string
	// Heartbeat is the masters' ping period (default 1s); a link silent
	// for 3×Heartbeat is closed.
	Heartbeat time.Duration
	// Lease, FenceGrace and ExitFence are announced to the masters
	// (lanwire.Timings; defaults 10s, 3s, 2s) and Margin is added before
	// a lost master's copies end (default 1s; lanwire/fencing.go).
	Lease, FenceGrace, ExitFence, Margin time.Duration
	// PortCheckTimeout bounds one TCP connect (default 1s).
	PortCheckTimeout time.Duration
	// PortCheckAttempts per port (default 3), PortCheckInterval apart (default 200ms).
	PortCheckAttempts int
	PortCheckInterval time.Duration
	// RetryBackoffInitial and RetryBackoffMax bound the delay before a
	// failed need is offered again (defaults 1s and 60s).
	RetryBackoffInitial time.Duration
	RetryBackoffMax     time.Duration
	// CrashLoopLimit is how many times a need's service may go down within
	// CrashLoopWindow before the need is re-offered only after a backoff
	// (0: 10; negative: never back off).
	CrashLoopLimit  int
	CrashLoopWindow time.Duration
	// OfferWindow caps how many needs one needs list carries (default 64).
	OfferWindow int
	// MaxPlacing caps the copies granted and not yet published; the other
	// needs wait, fairly between requests (0: DefaultMaxPlacing; negative:
	// no cap).
	MaxPlacing int
	// DeclineHold is how long a need is not placed again on a master that
	// declined it (0: DefaultDeclineHold).
	DeclineHold time.Duration
	// Feed, when set, serves the watch stream (LAN managers on etcd:
	// the stream is an etcd watch, resumable with ?since=).
	Feed ServiceFeed
	// Leading, when set, says whether this LAN manager still surely leads
	// (package leadership); while it does not, no master's ping is
	// answered, so no master's lease is renewed by it.
	Leading func() bool
	// MaxUnauthPerIP and MaxUnauth cap the connections that have not
	// presented the token, from one address (default 64) and in all
	// (default a quarter of the descriptor limit, at most 1024); the
	// oldest one waiting for a request makes room for a new one
	// (lanmanager/connguard). UnauthTimeout closes such a connection
	// once it has spent that long in one state (default 5s).
	MaxUnauthPerIP, MaxUnauth int
	UnauthTimeout             time.Duration
	// HelloTimeout bounds the wait for a link's hello (default 10s).
	HelloTimeout time.Duration
	Logger       hclog.Logger
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Heartbeat, lanwire.DefaultHeartbeat)
	def(&c.Lease, lanwire.DefaultLease)
	def(&c.ExitFence, lanwire.DefaultExitFence)
	if c.FenceGrace == 0 {
		c.FenceGrace = lanwire.DefaultFenceGrace
	}
	if c.Margin == 0 {
		c.Margin = lanwire.DefaultMargin
	}
	def(&c.PortCheckTimeout, time.Second)
	def(&c.PortCheckInterval, 200*time.Millisecond)
	if c.PortCheckAttempts <= 0 {
		c.PortCheckAttempts = 3
	}
	if c.MaxUnauthPerIP == 0 {
		c.MaxUnauthPerIP = DefaultMaxUnauthPerIP
	}
	if c.MaxUnauth == 0 {
		c.MaxUnauth = DefaultMaxUnauth()
	}
	if c.UnauthTimeout == 0 {
		c.UnauthTimeout = DefaultUnauthTimeout
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = DefaultHelloTimeout
	}
	if c.CertTTL <= 0 {
		c.CertTTL = DefaultCertTTL
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
}

// DefaultCertTTL is Config.CertTTL's default.
const DefaultCertTTL = 30 * 24 * time.Hour

func (c *Config) timings() lanwire.Timings {
	return lanwire.NewTimings(c.Heartbeat, c.Lease, c.FenceGrace, c.ExitFence)
}

// Server is the LAN manager: the HTTP listener (links and admin API)
// around one loop that owns a lanstate.State. Every change goes through
// the loop, which applies a batch of events, commits the batch's store
// writes in one transaction, and only then sends frames, answers admin
// calls and notifies watchers: nothing leaves the LAN manager before it
// is on disk.
type Server struct {
	cfg   Config
	log   hclog.Logger
	store store.Store
	files []lanstate.FileNeed

	events chan event
	// calls carries admin calls and watch registrations: they pass the
	// links' frames queued in events, so an operator's request is not
	// answered only after a burst's reports.
	calls   chan event
	running chan struct{} // closed when the loop runs
	stopped chan struct{} // closed when the loop has ended
	stopErr error         // why; set before stopped is closed

	// wg tracks link goroutines and port checks; once closing is set
	// (under mu) no more are added.
	wg      sync.WaitGroup
	mu      sync.Mutex
	closing bool

	ln    net.Listener
	ready chan struct{}

	// guard caps and times out connections without the token; shedCount
	// counts those it closed over a cap.
	guard     *connguard.Guard
	shedCount atomic.Uint64

	// creds is the tokens and revocations as last committed (auth.go).
	creds atomic.Pointer[authTable]
}

// errStopped answers calls once the loop has ended.
var errStopped = errors.New("lanmanager: not running")

// New validates cfg, reads the needs files and opens the store. A bad
// needs file fails before the store is opened, so it is left untouched.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.Token == "" {
		return nil, errors.New("lanmanager: a token is required")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("lanmanager: addr %q: %w", cfg.Addr, err)
	}
	if err := cfg.timings().Validate(); err != nil {
		return nil, fmt.Errorf("lanmanager: timings: %w", err)
	}
	if cfg.Margin < 0 {
		return nil, fmt.Errorf("lanmanager: margin %v: must not be negative", cfg.Margin)
	}
	if err := cfg.validateGuard(); err != nil {
		return nil, fmt.Errorf("lanmanager: %w", err)
	}
	files, err := loadNeedsFiles(cfg.NeedsFiles)
	if err != nil {
		return nil, fmt.Errorf("lanmanager: %w", err)
	}
	st := cfg.Store
	if st == nil {
		if cfg.DataDir == "" {
			return nil, errors.New("lanmanager: need a DataDir or a Store")
		}
		st, err = store.OpenBolt(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("lanmanager: %w", err)
		}
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, store: st, files: files,
		events:  make(chan event, 1024),
		calls:   make(chan event, 64),
		running: make(chan struct{}),
		stopped: make(chan struct{}),
		ready:   make(chan struct{}),
	}
	s.creds.Store(newAuthTable(store.Snapshot{}))
	s.guard = connguard.New(connguard.Config{
		PerSource: cfg.MaxUnauthPerIP, Total: cfg.MaxUnauth, Timeout: cfg.UnauthTimeout, Shed: s.shed,
	})
	return s, nil
}

// Listen binds the listen address; Run calls it when it was not called.
func (s *Server) Listen() error {
	if s.ln != nil {
		return nil
	}
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("lanmanager: listen: %w", err)
		}
	}
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	s.ln = ln
	close(s.ready)
	return nil
}

// Ready is closed once the server listens; Addr is valid from then on.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the bound listen address (nil before Listen).
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Handler returns the HTTP handler (link + admin API).
func (s *Server) Handler() http.Handler { return s.routes() }

// Run listens (unless Listen was called) and serves until ctx is done or
// the store fails, then closes every link and the store.
func (s *Server) Run(ctx context.Context) (err error) {
	defer func() {
		if cerr := s.store.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("lanmanager: close store: %w", cerr)
		}
	}()
	if err := s.Listen(); err != nil {
		close(s.stopped)
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lp, err := s.newLoop(time.Now())
	if err != nil {
		_ = s.ln.Close()
		close(s.stopped)
		return err
	}
	loopDone := make(chan error, 1)
	go func() {
		err := lp.run(ctx)
		cancel()
		loopDone <- err
	}()
	s.log.Info("LAN manager listening", "addr", s.ln.Addr().String(), "tls", s.cfg.TLS != nil, "lease", s.cfg.Lease, "exitfence", s.cfg.ExitFence)

	hs := &http.Server{
		Handler:           s.routes(),
		ConnState:         s.guard.ConnState,
		ConnContext:       withConn,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       idleTimeout,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	hs.RegisterOnShutdown(s.guard.CloseFresh)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(s.ln) }()
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("lanmanager: serve: %w", err)
		cancel()
	}
	if lerr := <-loopDone; lerr != nil && err == nil {
		err = lerr
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if serr := hs.Shutdown(sctx); serr != nil && err == nil {
		err = fmt.Errorf("lanmanager: shutdown: %w", serr)
	}
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// track adds n goroutines to wg unless the server is closing.
func (s *Server) track(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(n)
	return true
}

// call runs fn in the loop and waits until its batch is committed; fn's
// result is only returned then.
func (s *Server) call(fn func(now time.Time, st *lanstate.State) error) error {
	done := make(chan error, 1)
	select {
	case s.calls <- evCall{fn: fn, done: done}:
	case <-s.stopped:
		return s.stopError()
	}
	select {
	case err := <-done:
		return err
	case <-s.stopped:
		select {
		case err := <-done:
			return err
		default:
			return s.stopError()
		}
	}
}

func (s *Server) stopError() error {
	if s.stopErr != nil {
		return fmt.Errorf("%w: %w", errStopped, s.stopErr)
	}
	return errStopped
}

// post hands an event to the loop unless it has ended.
func (s *Server) post(e event) bool { return s.postTo(s.events, e) }

// postCall hands an admin call or watch registration to the loop.
func (s *Server) postCall(e event) bool { return s.postTo(s.calls, e) }

func (s *Server) postTo(ch chan<- event, e event) bool {
	select {
	case ch <- e:
		return true
	case <-s.stopped:
		return false
	}
}
