package lanlink_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/allex-go/allex/agent/lanlink"
	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/lanmanagertest"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// tlsSide is a master that only links: it says hello as machine and
// keeps the link's states and errors.
type tlsSide struct {
	machine string

	mu     sync.Mutex
	states []string
	errs   []error
	frames []any
}

func (s *tlsSide) Hello() lanwire.Hello {
	return lanwire.Hello{MachineID: s.machine, Identity: "0123456789abcdef", Modules: []string{"web"}}
}
func (s *tlsSide) Welcomed(*lanwire.Welcome, time.Duration) {}
func (s *tlsSide) Renewed(time.Duration)                    {}
func (s *tlsSide) HoldsCopies() bool                        { return false }
func (s *tlsSide) HandleFrame(_ string, p any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames = append(s.frames, p)
}
func (s *tlsSide) LinkState(state string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states = append(s.states, state)
	if err != nil {
		s.errs = append(s.errs, err)
	}
}

// errWith is the first error so far that wraps target (nil: any) and
// says text.
func (s *tlsSide) errWith(target error, text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, err := range s.errs {
		if (target == nil || errors.Is(err, target)) && strings.Contains(err.Error(), text) {
			return err
		}
	}
	return nil
}

func (s *tlsSide) everConnected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.states {
		if st == lanlink.StateConnected {
			return true
		}
	}
	return false
}

// tlsLAN is a LAN manager serving TLS with a certificate from ca, in
// this process.
func tlsLAN(t *testing.T, ca *lanpki.CA) (*lanmanager.Server, int) {
	t.Helper()
	srv := lanmanagertest.Start(t, lanmanagertest.WithTLS(t, lanmanager.Config{Heartbeat: 200 * time.Millisecond}, ca))
	return srv, srv.Addr().(*net.TCPAddr).Port
}

// masterCert is a master certificate for machine from ca, as a join
// gives one.
func masterCert(t *testing.T, ca *lanpki.CA, machine string) *tls.Certificate {
	t.Helper()
	keyPEM, csrPEM, err := lanpki.NewMasterKey(machine)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignMaster(csrPEM, machine, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := lanpki.LoadKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

// runLink runs a link to port over TLS with cfg until the test ends.
func runLink(t *testing.T, port int, side *tlsSide, mod func(*lanlink.Config)) *lanlink.Link {
	t.Helper()
	cfg := lanlink.Config{Address: "127.0.0.1", Port: port, Handler: side,
		BackoffInitial: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	mod(&cfg)
	l, err := lanlink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("link Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("link did not stop")
		}
	})
	return l
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTLSLink: over TLS a master links with its certificate, sent no
// token, as the machine the certificate names and no other; without a
// certificate it is refused (401), a LAN manager with another CA is not
// linked to, and a revoked machine is cut off and refused (403).
func TestTLSLink(t *testing.T) {
	ca, err := lanpki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := lanpki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv, port := tlsLAN(t, ca)
	withCert := func(pool *lanpki.CA, cert *tls.Certificate) func(*lanlink.Config) {
		return func(c *lanlink.Config) { c.TLS = lanpki.ClientConfig(pool.Pool(), cert) }
	}

	t.Run("its own machine id", func(t *testing.T) {
		side := &tlsSide{machine: "m1"}
		l := runLink(t, port, side, withCert(ca, masterCert(t, ca, "m1")))
		waitFor(t, "linked", func() bool { return l.State() == lanlink.StateConnected })
		if l.SessionID() == "" {
			t.Fatal("linked without a session id")
		}

		// Revoked: the link is closed with the reason, and the next
		// dial is refused with 403.
		if err := srv.RevokeMachine("m1", "stolen"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the link refused after the revocation", func() bool {
			return side.errWith(lanlink.ErrRefused, "403") != nil
		})
		if l.State() == lanlink.StateConnected {
			t.Errorf("linked after the revocation")
		}
		side.mu.Lock()
		defer side.mu.Unlock()
		said := false
		for _, f := range side.frames {
			if e, ok := f.(*lanwire.Error); ok && strings.Contains(e.Message, "stolen") {
				said = true
			}
		}
		if !said {
			t.Errorf("the master was not told why it was revoked: frames %v, errors %v", side.frames, side.errs)
		}
	})
	refused := []struct {
		name   string
		side   *tlsSide
		mod    func(*lanlink.Config)
		target error
		says   string
	}{
		{"another machine's certificate", &tlsSide{machine: "m2"}, withCert(ca, masterCert(t, ca, "m3")), lanlink.ErrRefused, `certificate is machine "m3"'s; it cannot say hello as "m2"`},
		{"no certificate", &tlsSide{machine: "m4"}, withCert(ca, nil), lanlink.ErrUnauthorized, "401"},
		{"a LAN manager of another CA", &tlsSide{machine: "m5"}, withCert(other, masterCert(t, other, "m5")), nil, "certificate signed by unknown authority"},
		{"a certificate of another CA", &tlsSide{machine: "m6"}, withCert(ca, masterCert(t, other, "m6")), nil, "tls: unknown certificate authority"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			runLink(t, port, tt.side, tt.mod)
			waitFor(t, "refused: "+tt.says, func() bool { return tt.side.errWith(tt.target, tt.says) != nil })
			if tt.side.everConnected() {
				t.Errorf("linked: %v", tt.side.errs)
			}
		})
	}
}

// TestReadyGatesTheDial: with Config.Ready the link dials only once it
// returns (a master that has not joined has no certificate yet), and Run
// returns when ctx ends while it waits.
func TestReadyGatesTheDial(t *testing.T) {
	ca, err := lanpki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, port := tlsLAN(t, ca)
	joined := make(chan struct{})
	side := &tlsSide{machine: "r1"}
	l := runLink(t, port, side, func(c *lanlink.Config) {
		c.TLS = lanpki.ClientConfig(ca.Pool(), masterCert(t, ca, "r1"))
		c.Ready = func(ctx context.Context) error {
			select {
			case <-joined:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	time.Sleep(300 * time.Millisecond)
	side.mu.Lock()
	states := append([]string(nil), side.states...)
	side.mu.Unlock()
	if len(states) != 0 || l.State() != lanlink.StateDisconnected {
		t.Fatalf("before Ready: states %v, state %s; want no dial", states, l.State())
	}
	close(joined)
	waitFor(t, "linked once ready", func() bool { return l.State() == lanlink.StateConnected })

	// Never ready: Run ends with its context.
	waiting := &tlsSide{machine: "r2"}
	l2, err := lanlink.New(lanlink.Config{Address: "127.0.0.1", Port: port, Handler: waiting,
		TLS: lanpki.ClientConfig(ca.Pool(), nil), Ready: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l2.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run waiting for Ready: %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return while waiting for Ready")
	}
	if waiting.everConnected() || len(waiting.errs) != 0 {
		t.Errorf("never ready, yet: states %v, errors %v", waiting.states, waiting.errs)
	}
}
