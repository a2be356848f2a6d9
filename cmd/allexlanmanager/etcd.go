package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
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
// standby (every call but /healthz answered 503 with the leader's
// address) until it is elected, then leads until ctx ends (it resigns)
// or its leadership is lost (it stops with an error, and its supervisor
// starts it again as a standby).
func runEtcd(ctx context.Context, cfg lanmanager.Config, es etcdStore, ttl time.Duration, advertise string, log hclog.Logger) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: es.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{leadership.Reconnect}})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()
	feed := func(ctx context.Context, module string, since int64, emit func([]adminapi.ServiceEvent) error) error {
		return store.WatchServices(ctx, cli, es.prefix, module, since, emit)
	}
	stopStandby, err := serveStandby(cfg.Addr, cli, es.prefix, advertise, cfg.Token, lanmanager.FeedHandler(cfg.Token, feed))
	if err != nil {
		return err
	}
	log.Info("standing by for the leadership", "etcd", es.endpoints, "prefix", es.prefix, "advertise", advertise)
	hctx, stopHasten := context.WithCancel(ctx)
	go leadership.Hasten(hctx, cli, es.prefix, advertise, refused, log.Info)
	lead, err := leadership.Campaign(ctx, cli, es.prefix, advertise, ttl)
	stopHasten()
	ln := stopStandby()
	if err != nil {
		_ = ln.Close()
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	log.Info("elected: leading the LAN")
	st := store.NewEtcd(cli, es.prefix)
	st.Guard(lead.Valid, lead.Guard())
	if cfg.Lease > 0 {
		st.SessionTTL = cfg.Lease
	}
	cfg.Store, cfg.Leading, cfg.Listener, cfg.Feed = st, lead.Acting, ln, feed
	srv, err := lanmanager.New(cfg)
	if err != nil {
		_ = ln.Close()
		_ = lead.Resign(context.Background())
		return err
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
	err = srv.Run(rctx)
	select {
	case <-lead.Done():
		if ctx.Err() == nil {
			return errors.Join(errors.New("lost the leadership of the LAN (another LAN manager leads now)"), err)
		}
	default:
	}
	rctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if rerr := lead.Resign(rctx2); rerr != nil {
		log.Warn("cannot resign the leadership; a standby takes over once the lease expires", "error", rerr)
	}
	return err
}

// serveStandby answers on addr while this LAN manager is not the leader:
// /healthz says so, the watch stream is served from etcd, other admin
// calls are forwarded to the leader, and a master's link is answered 503
// naming the leader, so that the master links to it, or relayed to the
// leader when the master asks (it cannot reach the leader itself). stop
// returns the listener, still bound.
func serveStandby(addr string, cli *clientv3.Client, prefix, self, token string, watch http.HandlerFunc) (stop func() net.Listener, err error) {
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
			if r.URL.Path == lanwire.Path && !lanmanager.BearerOK(r, token) {
				unavailable(w, leader, "standby LAN manager: a relayed link needs the LAN's token")
				return
			}
			forward(w, r, leader)
			return
		}
		msg := "standby LAN manager; no leader yet"
		if leader != "" {
			msg = "standby LAN manager; the leader is " + leader
		}
		unavailable(w, leader, msg)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return base }}
	served := make(chan struct{})
	go func() { _ = hs.Serve(ln); close(served) }()
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
