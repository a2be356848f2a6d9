package lanlink_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/allex-go/allex/agent/lanlink"
	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// agentSide is a minimal agent: it claims every offered need once.
type agentSide struct {
	link *lanlink.Link

	mu        sync.Mutex
	claimed   map[string]bool
	granted   []string
	states    []string
	sendErr   error
	helloSent time.Duration
	renewals  int
}

func (a *agentSide) Hello() lanwire.Hello {
	return lanwire.Hello{MachineID: "m1", Identity: "0123456789abcdef", Modules: []string{"web"}}
}

func (a *agentSide) Welcomed(_ *lanwire.Welcome, helloSent time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.helloSent = helloSent
}

// Renewed records the pongs: each renews from its ping's send time, never
// before the session's hello.
func (a *agentSide) Renewed(sent time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sent < a.helloSent {
		a.sendErr = fmt.Errorf("renewed from %v, before the hello at %v", sent, a.helloSent)
	}
	a.renewals++
}

func (a *agentSide) HoldsCopies() bool { return false }

func (a *agentSide) HandleFrame(typ string, payload any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch p := payload.(type) {
	case *lanwire.Needs:
		for _, n := range p.Needs {
			if !a.claimed[n.Instance] {
				a.claimed[n.Instance] = true
				if err := a.link.Send(lanwire.TypeClaim, &lanwire.Claim{Instance: n.Instance}); err != nil {
					a.sendErr = err
				}
			}
		}
	case *lanwire.Grant:
		a.granted = append(a.granted, p.Need.Instance)
	}
}

func (a *agentSide) LinkState(state string, _ error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.states = append(a.states, state)
}

// TestAgainstLANManager runs the link against the real LAN manager: hello,
// welcome, needs, claim, grant, and reconnecting after the LAN manager
// restarts on the same port.
func TestAgainstLANManager(t *testing.T) {
	dir := t.TempDir()
	needs := filepath.Join(dir, "needs.json")
	if err := os.WriteFile(needs, []byte(`{"needs":[{"instance":"web1","module":"web"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	startLM := func(addr string) (stop func(), bound string) {
		srv, err := lanmanager.New(lanmanager.Config{
			Addr: addr, Token: "tok", Store: store.NewMemory(), NeedsFiles: []string{needs},
			Heartbeat: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatalf("lanmanager.New: %v", err)
		}
		if err := srv.Listen(); err != nil {
			t.Fatalf("listen: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		var once sync.Once
		stop = func() {
			once.Do(func() {
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("lanmanager Run: %v", err)
					}
				case <-time.After(20 * time.Second):
					t.Errorf("lanmanager did not stop")
				}
			})
		}
		t.Cleanup(stop)
		return stop, srv.Addr().String()
	}
	stopLM, addr := startLM("127.0.0.1:0")
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := net.LookupPort("tcp", portStr)

	a := &agentSide{claimed: map[string]bool{}}
	link, err := lanlink.New(lanlink.Config{
		Address: "127.0.0.1", Port: port, Token: "tok", Handler: a,
		BackoffInitial: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	a.link = link
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- link.Run(ctx) }()
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

	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("grant", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.granted) == 1 && a.granted[0] == "web1"
	})
	first := link.SessionID()
	if first == "" {
		t.Fatalf("no session id while granted")
	}
	// Its pings are answered: the lease is renewed.
	wait("renewals", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.renewals >= 2
	})

	stopLM()
	wait("disconnected", func() bool { return link.State() != lanlink.StateConnected })
	// The port was free a moment ago; if something else took it, the
	// restart part cannot run here.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken after the LAN manager stopped: %v", addr, err)
	}
	ln.Close()
	startLM(addr)
	wait("reconnected", func() bool {
		id := link.SessionID()
		return id != "" && id != first
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sendErr != nil {
		t.Errorf("claim: %v", a.sendErr)
	}
}
