package lanmanager

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/allex-go/allex/lanmanager/connguard"
)

// Defaults of the Config fields that guard the listener.
const (
	DefaultMaxUnauthPerIP = 64
	DefaultUnauthTimeout  = 5 * time.Second
	DefaultHelloTimeout   = 10 * time.Second
	// maxUnauthCeiling bounds DefaultMaxUnauth where descriptors abound.
	maxUnauthCeiling = 1024
)

// idleTimeout closes keep-alive connections that presented the token and
// then sent nothing for this long. It is above the idle time of Go's HTTP
// client (90s), so the client, not the server, ends an idle connection
// and never sends a request on one being closed.
const idleTimeout = 2 * time.Minute

// DefaultMaxUnauth is Config.MaxUnauth's default: a quarter of the
// process's descriptor limit, at most 1024, so that strangers never hold
// the descriptors admin calls, links and the store need.
func DefaultMaxUnauth() int {
	if n, ok := openFileLimit(); ok {
		return int(max(1, min(n/4, maxUnauthCeiling)))
	}
	return maxUnauthCeiling
}

func (c *Config) validateGuard() error {
	switch {
	case c.MaxUnauthPerIP < 0:
		return fmt.Errorf("max unauthenticated connections per IP %d: want at least 1", c.MaxUnauthPerIP)
	case c.MaxUnauth < 0:
		return fmt.Errorf("max unauthenticated connections %d: want at least 1", c.MaxUnauth)
	case c.UnauthTimeout < 0:
		return fmt.Errorf("unauthenticated connection timeout %v: want more than 0", c.UnauthTimeout)
	case c.HelloTimeout < 0:
		return fmt.Errorf("hello timeout %v: want more than 0", c.HelloTimeout)
	}
	return nil
}

type connKey struct{}

// withConn is an http.Server ConnContext: it keeps the connection in the
// requests' context, so that authorized can tell the guard.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// authenticated tells the guard that r's connection presented the token.
func (s *Server) authenticated(r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		s.guard.Authenticated(c)
	}
}

// shed logs a connection the guard closed. Closings over a cap are warned
// about on the 1st, 10th, 100th... so a flood is seen without flooding
// the log; timeouts are routine (a health check's keep-alive connection).
func (s *Server) shed(src netip.Addr, why connguard.Reason) {
	if why == connguard.TimedOut {
		s.log.Debug("closed a connection that presented no token in time", "remote", src)
		return
	}
	n := s.shedCount.Add(1)
	if !powerOf10(n) {
		s.log.Debug("closed a connection without the token over a cap", "remote", src, "how", why)
		return
	}
	s.log.Warn("closing connections without the token over the caps", "closed", n, "remote", src, "how", why,
		"per_ip", s.cfg.MaxUnauthPerIP, "total", s.cfg.MaxUnauth)
}

func powerOf10(n uint64) bool {
	for n >= 10 && n%10 == 0 {
		n /= 10
	}
	return n == 1
}
