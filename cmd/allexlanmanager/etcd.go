package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/leadership"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// etcdStore is a parsed -store etcd://host:port[,host:port...][/prefix].
type etcdStore struct {
	endpoints []string
	prefix    string
}

func parseEtcdStore(v string) (etcdStore, error) {
	bad := fmt.Errorf("-store %q: want etcd://host:port[,host:port...][/prefix]", v)
	rest, ok := strings.CutPrefix(v, "etcd://")
	if !ok || strings.ContainsAny(rest, "?#@") {
		return etcdStore{}, bad
	}
	hosts, path, _ := strings.Cut(rest, "/")
	if hosts == "" {
		return etcdStore{}, bad
	}
	var s etcdStore
	for _, h := range strings.Split(hosts, ",") {
		if host, port, err := net.SplitHostPort(h); err != nil || host == "" || port == "" {
			return etcdStore{}, fmt.Errorf("-store %q: endpoint %q: want host:port", v, h)
		}
		s.endpoints = append(s.endpoints, "http://"+h)
	}
	s.prefix = "/" + strings.Trim(path, "/")
	if s.prefix == "/" {
		s.prefix = "/allex"
	}
	return s, nil
}

// runEtcd runs a LAN manager whose state lives in etcd: it serves as a
// standby until it is elected, then leads until ctx ends (it resigns),
// its leadership is lost (it stops with an error, and its supervisor
// starts it again as a standby), or standbys hear more masters cut off
// from it than it hears (it resigns and stands by again; unreached.go).
func runEtcd(ctx context.Context, cfg lanmanager.Config, es etcdStore, ttl time.Duration, advertise string, tf *tlsFlags, log hclog.Logger) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: es.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{leadership.Reconnect}})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()
	var adv []string
	if u, err := url.Parse(advertise); err == nil {
		adv = append(adv, u.Host)
	}
	shared := func(ctx context.Context, create func() ([]byte, []byte, error)) ([]byte, []byte, error) {
		return store.EtcdCA(ctx, cli, es.prefix, cfg.Token, create)
	}
	st, err := tf.load(ctx, cfg.DataDir, hostsOf(append(adv, cfg.Addr)...), shared, log)
	if err != nil {
		return err
	}
	e := &etcdLAN{cfg: cfg, es: es, ttl: ttl, self: advertise, cli: cli, log: log, tls: st, toLeader: leaderTransport(st)}
	if st != nil {
		e.cfg.TLS, e.cfg.CA = st.config(), st.ca
	}
	e.feed = func(ctx context.Context, module string, since int64, emit func([]adminapi.ServiceEvent) error) error {
		return store.WatchServices(ctx, cli, es.prefix, module, since, emit)
	}
	for {
		lead, ln, err := e.standBy(ctx)
		if err != nil || lead == nil {
			return err
		}
		again, err := e.lead(ctx, lead, ln)
		if !again {
			return err
		}
	}
}

// etcdLAN is one LAN manager of a LAN on etcd.
type etcdLAN struct {
	cfg  lanmanager.Config
	es   etcdStore
	ttl  time.Duration
	self string // advertised address
	cli  *clientv3.Client
	log  hclog.Logger
	feed lanmanager.ServiceFeed
	// tls is nil with -insecure; toLeader carries forwarded calls and
	// relayed links to the leader.
	tls      *serverTLS
	toLeader *http.Transport
}

// standBy serves as a standby until elected (lead set, with the still
// bound listener) or ctx ends (lead nil).
func (e *etcdLAN) standBy(ctx context.Context) (*leadership.Lead, net.Listener, error) {
	cut := newUnreached()
	stopStandby, err := e.serveStandby(lanmanager.FeedHandler(e.mayRead, e.feed), cut)
	if err != nil {
		return nil, nil, err
	}
	e.log.Info("standing by for the leadership", "etcd", e.es.endpoints, "prefix", e.es.prefix, "advertise", e.self)
	sctx, stop := context.WithCancel(ctx)
	go leadership.Hasten(sctx, e.cli, e.es.prefix, e.self, refused, e.log.Info)
	go reportUnreached(sctx, e.cli, e.es.prefix, e.self, cut)
	lead, err := leadership.Campaign(ctx, e.cli, e.es.prefix, e.self, e.ttl)
	stop()
	ln := stopStandby()
	if err != nil {
		_ = ln.Close()
		if ctx.Err() != nil {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	e.log.Info("elected: leading the LAN")
	return lead, ln, nil
}

// lead serves the LAN on ln until ctx ends, the leadership is lost, or
// it steps down for masters cut off from it (again: stand by again).
func (e *etcdLAN) lead(ctx context.Context, lead *leadership.Lead, ln net.Listener) (again bool, err error) {
	st := store.NewEtcd(e.cli, e.es.prefix)
	st.Guard(lead.Valid, lead.Guard())
	cfg := e.cfg
	if cfg.Lease > 0 {
		st.SessionTTL = cfg.Lease
	}
	cfg.Store, cfg.Leading, cfg.Listener, cfg.Feed = st, lead.Acting, ln, e.feed
	srv, err := lanmanager.New(cfg)
	if err != nil {
		_ = ln.Close()
		_ = lead.Resign(context.Background())
		return false, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lead.Done():
			cancel()
		case <-rctx.Done():
		}
	}()
	var stepped atomic.Bool
	go watchUnreached(rctx, e.cli, e.es.prefix, e.self, lead.Rev(), linkedCount(srv), func(cut, linked int) {
		e.log.Warn("standbys hear masters that cannot reach this leader: stepping down", "cut_off", cut, "linked", linked)
		stepped.Store(true)
		cancel()
	})
	err = srv.Run(rctx)
	select {
	case <-lead.Done():
		if ctx.Err() == nil {
			return false, errors.Join(errors.New("lost the leadership of the LAN (another LAN manager leads now)"), err)
		}
	default:
	}
	rctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if rerr := lead.Resign(rctx2); rerr != nil {
		e.log.Warn("cannot resign the leadership; a standby takes over once the lease expires", "error", rerr)
	}
	return stepped.Load() && ctx.Err() == nil && err == nil, err
}

// linkedCount counts the masters linked to srv.
func linkedCount(srv *lanmanager.Server) func() int {
	return func() int {
		ms, err := srv.Machines()
		if err != nil {
			return 0
		}
		n := 0
		for _, m := range ms {
			if m.Connected {
				n++
			}
		}
		return n
	}
}

// serveStandby answers on addr while this LAN manager is not the leader:
// /healthz says so, the watch stream is served from etcd, other admin
// calls are forwarded to the leader, and a master's link is answered 503
// naming the leader, so that the master links to it, or relayed to the
// leader when the master asks (it cannot reach the leader itself). stop
// returns the listener, still bound.
func (e *etcdLAN) serveStandby(watch http.HandlerFunc, cut *unreached) (stop func() net.Listener, err error) {
	addr, cli, prefix, self := e.cfg.Addr, e.cli, e.es.prefix, e.self
	tl, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	ln := &handoff{TCPListener: tl.(*net.TCPListener)}
	// Watch streams and relays end with the standby (their clients
	// resume on the leader), so they do not hold up the handover.
	base, endStreams := context.WithCancel(context.Background())
	leaderOf := leadership.Follow(base, cli, prefix)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("standby\n"))
	})
	mux.HandleFunc("GET /v1/services/watch", watch)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		leader := leaderOf()
		if leader == "" {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			leader, _ = leadership.Leader(ctx, cli, prefix)
			cancel()
		}
		if forwardable(r, leader, self) {
			if r.URL.Path == lanwire.Path && !e.relayable(r) {
				unavailable(w, leader, "standby LAN manager: a relayed link needs a master's certificate (or, over plain HTTP, the LAN's token)")
				return
			}
			forward(w, r, leader, e.toLeader, func() {
				if r.URL.Path == lanwire.Path {
					cut.failed(r.RemoteAddr, leader, time.Now())
				}
			})
			return
		}
		msg := "standby LAN manager; no leader yet"
		if leader != "" {
			msg = "standby LAN manager; the leader is " + leader
		}
		unavailable(w, leader, msg)
	})
	// Requests, not connections, end with the standby: a TLS handshake
	// under way at the election is not cut off, and its request gets an
	// answer (the leader's name) instead of a dropped connection.
	endWithStandby := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		defer context.AfterFunc(base, cancel)()
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
	hs := &http.Server{Handler: endWithStandby, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	var sl net.Listener = ln
	if e.tls != nil {
		sl = tls.NewListener(ln, e.tls.config())
	}
	go func() { _ = hs.Serve(sl); close(served) }()
	return func() net.Listener {
		endStreams()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		<-served
		return ln.Take()
	}, nil
}

// unavailable answers 503 naming the leader, in header and body.
func unavailable(w http.ResponseWriter, leader, msg string) {
	if leader != "" {
		w.Header().Set(lanwire.LeaderHeader, leader)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg, "leader": leader})
}

// refused says whether leader's address refuses connections: its host
// answers, and no process listens there.
func refused(leader string) bool {
	u, err := url.Parse(leader)
	if err != nil || u.Host == "" {
		return false
	}
	c, err := net.DialTimeout("tcp", u.Host, 300*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}
