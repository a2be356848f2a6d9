package lanmanager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/allex-go/allex/lanmanager/store"
	"github.com/hashicorp/go-hclog"
)

// DefaultAddr is loopback only: exposing the LAN manager to the LAN is a
// deliberate choice (-addr :23552), not an accident of defaults.
const DefaultAddr = "127.0.0.1:23552"

// DefaultOfferWindow is Config.OfferWindow's default.
const DefaultOfferWindow = 64

// Config configures a Server. Zero durations take the defaults below.
type Config struct {
	// Addr to listen on; default DefaultAddr. "127.0.0.1:0" picks a port.
	Addr string
	// Token every master and admin client must present. Required.
	Token string
	// DataDir holds the bbolt database; used when Store is nil.
	DataDir string
	// Store overrides the on-disk store (e.g. store.NewMemory()). Run closes it.
	Store store.Store
	// NeedsFiles are layered needs files merged at startup (later wins).
	NeedsFiles []string
	// Heartbeat is the masters' ping period (default 5s); a link silent
	// for 3×Heartbeat is closed.
	Heartbeat time.Duration
	// Grace is how long a lost master's services stay published (default 15s).
	Grace time.Duration
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
	// (0: 10; negative: never back off). Without it a service that dies
	// right after being published would be restarted as fast as the LAN
	// allows, forever.
	CrashLoopLimit  int
	CrashLoopWindow time.Duration
	// OfferWindow caps how many needs one needs list carries (default
	// 64). A master claims what it is offered and the next list brings
	// the next needs, so a larger window only makes every list of a big
	// backlog cost more to send, decode and claim.
	OfferWindow int
	Logger      hclog.Logger
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
	def(&c.Heartbeat, 5*time.Second)
	def(&c.Grace, 15*time.Second)
	def(&c.PortCheckTimeout, time.Second)
	def(&c.PortCheckInterval, 200*time.Millisecond)
	def(&c.RetryBackoffInitial, time.Second)
	def(&c.RetryBackoffMax, 60*time.Second)
	def(&c.CrashLoopWindow, time.Minute)
	if c.OfferWindow <= 0 {
		c.OfferWindow = DefaultOfferWindow
	}
	if c.CrashLoopLimit == 0 {
		c.CrashLoopLimit = 10
	}
	if c.PortCheckAttempts <= 0 {
		c.PortCheckAttempts = 3
	}
	if c.RetryBackoffMax < c.RetryBackoffInitial {
		c.RetryBackoffMax = c.RetryBackoffInitial
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
}

// Server is the LAN manager.
type Server struct {
	cfg   Config
	log   hclog.Logger
	store store.Store

	mu sync.Mutex
	// needs is only changed through setNeedLocked and dropNeedLocked,
	// which keep sorted current.
	needs map[string]*needState
	// sorted is needs by instance, built on first use and then kept in
	// order: needs lists go out far more often than needs come and go
	// (every grant, spawned and capacity report can trigger one), and
	// sorting every need for each list was a tenth of the LAN manager's
	// CPU while 500 services started.
	sorted   []*needState
	svcs     map[string]*store.Service
	machines map[string]*machine
	watchers map[*watcher]struct{}
	sessions map[*session]struct{}
	closed   bool
	// reoffer wakes reofferLoop; one pending wake-up covers any number of
	// changes.
	reoffer chan struct{}
	// downs holds, per instance, when its service went down within the
	// crash-loop window.
	downs map[string][]time.Time
	// wg tracks link sessions and port checks, which outlive their HTTP
	// handlers' bookkeeping in http.Server.
	wg sync.WaitGroup

	ln    net.Listener
	ready chan struct{}
	ctx   context.Context
}

// New validates cfg, merges the needs files and opens the store. A bad
// needs file fails before the store is opened, so it is left untouched.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.Token == "" {
		return nil, errors.New("lanmanager: a token is required")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("lanmanager: addr %q: %w", cfg.Addr, err)
	}
	fileNeeds, err := loadNeedsFiles(cfg.NeedsFiles)
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
		cfg:      cfg,
		log:      cfg.Logger,
		store:    st,
		needs:    map[string]*needState{},
		svcs:     map[string]*store.Service{},
		machines: map[string]*machine{},
		watchers: map[*watcher]struct{}{},
		sessions: map[*session]struct{}{},
		ready:    make(chan struct{}),
		reoffer:  make(chan struct{}, 1),
		downs:    map[string][]time.Time{},
	}
	if err := s.load(fileNeeds); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("lanmanager: %w", err)
	}
	return s, nil
}

func (s *Server) load(fileNeeds []fileNeed) error {
	needs, svcs, err := s.store.Load()
	if err != nil {
		return err
	}
	for _, n := range needs {
		s.setNeedLocked(&needState{st: n})
	}
	for _, sv := range svcs {
		sv := sv
		s.svcs[sv.Record.Instance] = &sv
	}
	inFiles := map[string]bool{}
	for _, fn := range fileNeeds {
		inFiles[fn.need.Instance] = true
	}
	for inst, ns := range s.needs {
		if strings.HasPrefix(ns.st.Origin, "file:") && !inFiles[inst] {
			if err := s.store.DeleteNeed(inst); err != nil {
				return err
			}
			s.dropNeedLocked(inst)
			s.log.Info("need removed: no longer in any needs file", "instance", inst)
		}
	}
	for inst, sv := range s.svcs {
		if strings.HasPrefix(sv.Origin, "file:") && !inFiles[inst] {
			if err := s.store.DeleteService(inst); err != nil {
				return err
			}
			delete(s.svcs, inst)
			s.log.Info("service removed: its need is no longer in any needs file", "instance", inst)
		}
	}
	now := time.Now()
	for _, fn := range fileNeeds {
		inst := fn.need.Instance
		if _, ok := s.svcs[inst]; ok {
			continue
		}
		if ns, ok := s.needs[inst]; ok {
			if !strings.HasPrefix(ns.st.Origin, "file:") || (reflect.DeepEqual(ns.st.Need, fn.need) && ns.st.Origin == fn.origin) {
				continue
			}
			st := ns.st
			st.Need, st.Origin, st.Attempts, st.NotBefore, st.LastError = fn.need, fn.origin, 0, time.Time{}, ""
			if err := s.store.PutNeed(st); err != nil {
				return err
			}
			ns.st = st
			continue
		}
		st := store.Need{Need: fn.need, CreatedAt: now, Origin: fn.origin}
		if err := s.store.PutNeed(st); err != nil {
			return err
		}
		s.setNeedLocked(&needState{st: st})
	}
	for _, sv := range s.svcs {
		s.machineLocked(sv.Record.MachineID)
	}
	return nil
}

// Listen binds the listen address; Run calls it when it was not called.
func (s *Server) Listen() error {
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("lanmanager: listen: %w", err)
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

// Run listens (unless Listen was called) and serves until ctx is done, then
// closes every link and the store.
func (s *Server) Run(ctx context.Context) (err error) {
	defer func() {
		if cerr := s.store.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("lanmanager: close store: %w", cerr)
		}
	}()
	if err := s.Listen(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.ctx = ctx
	s.startTimersLocked()
	s.mu.Unlock()
	s.wg.Add(1)
	go s.reofferLoop(ctx)
	s.log.Info("LAN manager listening", "addr", s.ln.Addr().String())

	var fresh newConns
	hs := &http.Server{
		Handler:           s.routes(),
		ConnState:         fresh.connState,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	hs.RegisterOnShutdown(fresh.closeAll)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(s.ln) }()
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("lanmanager: serve: %w", err)
	}
	cancel()
	s.shutdown()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if serr := hs.Shutdown(sctx); serr != nil && err == nil {
		err = fmt.Errorf("lanmanager: shutdown: %w", serr)
	}
	s.wg.Wait()
	return err
}

// shutdown stops timers and closes every link session.
func (s *Server) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, ns := range s.needs {
		ns.stopTimers()
	}
	for _, m := range s.machines {
		if m.graceTimer != nil {
			m.graceTimer.Stop()
		}
	}
	for sess := range s.sessions {
		sess.close()
	}
	for w := range s.watchers {
		close(w.ch)
		delete(s.watchers, w)
	}
}
