package lanmanager_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// rawHTTP is a keep-alive HTTP/1.1 connection driven by hand, so a test
// decides when it speaks and when it stays silent.
type rawHTTP struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (e *env) dialHTTP(t *testing.T) *rawHTTP {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(e.base, "http://"), wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawHTTP{t: t, c: c, r: bufio.NewReader(c)}
}

// get sends a GET with token (if any) and returns the status.
func (h *rawHTTP) get(path, token string) int {
	h.t.Helper()
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	_ = h.c.SetDeadline(time.Now().Add(wait))
	if _, err := fmt.Fprintf(h.c, "GET %s HTTP/1.1\r\nHost: lan\r\n%s\r\n", path, auth); err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// expectClosed waits until the server closes the connection.
func (h *rawHTTP) expectClosed() {
	h.t.Helper()
	_ = h.c.SetReadDeadline(time.Now().Add(wait))
	_, err := h.r.ReadByte()
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		h.t.Fatalf("connection still open (%v)", err)
	}
}

// TestHelloTimeout: a link that presented the token but sends no hello is
// closed once the hello is due, although it answers every ping; one that
// says hello in time is kept.
func TestHelloTimeout(t *testing.T) {
	cfg := testConfig()
	// Three heartbeats are under the hello timeout: the pongs alone
	// would keep the link.
	cfg.Heartbeat = 500 * time.Millisecond
	cfg.HelloTimeout = 2 * time.Second
	e := start(t, cfg)
	mute := e.rawMaster(t) // its reader answers the server's pings
	m := e.connect(t, hello("m1", "web"))
	m.pinging(100 * time.Millisecond)
	if code := mute.closeCode(); code != websocket.ClosePolicyViolation {
		t.Fatalf("link without hello closed with %d, want %d", code, websocket.ClosePolicyViolation)
	}
	if !strings.Contains(mute.readErr.Error(), "no hello within 2s") {
		t.Errorf("close reason: %v", mute.readErr)
	}
	select {
	case <-m.closed:
		t.Fatalf("the link that said hello was closed: %v", m.readErr)
	default:
	}
	if ms := e.machines(); len(ms) != 1 || !ms[0].Connected {
		t.Fatalf("machines = %+v, want m1 connected", ms)
	}
}

// TestUnauthCap: at the per-address cap a new connection without the token
// replaces the oldest idle one; a connection that presented the token is
// not counted.
func TestUnauthCap(t *testing.T) {
	cfg := testConfig()
	cfg.MaxUnauthPerIP = 3
	cfg.UnauthTimeout = time.Hour // only the cap closes connections here
	e := start(t, cfg)
	admin := e.dialHTTP(t)
	if st := admin.get("/v1/needs", testToken); st != http.StatusOK {
		t.Fatalf("admin call: %d", st)
	}
	var strangers []*rawHTTP
	for range 3 {
		s := e.dialHTTP(t)
		if st := s.get("/healthz", ""); st != http.StatusOK {
			t.Fatalf("healthz: %d", st)
		}
		strangers = append(strangers, s)
	}
	late := e.dialHTTP(t)
	if st := late.get("/healthz", ""); st != http.StatusOK {
		t.Fatalf("healthz: %d", st)
	}
	strangers[0].expectClosed()
	for _, s := range append(strangers[1:], late) {
		if st := s.get("/healthz", ""); st != http.StatusOK {
			t.Fatalf("healthz: %d", st)
		}
	}
	if st := admin.get("/v1/machines", testToken); st != http.StatusOK {
		t.Fatalf("admin call after the strangers: %d", st)
	}
}

// TestUnauthTimeout: a keep-alive connection that never presented the
// token is closed after UnauthTimeout of silence; one that did stays.
func TestUnauthTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.UnauthTimeout = 200 * time.Millisecond
	e := start(t, cfg)
	admin := e.dialHTTP(t)
	if st := admin.get("/v1/needs", testToken); st != http.StatusOK {
		t.Fatalf("admin call: %d", st)
	}
	stranger := e.dialHTTP(t)
	if st := stranger.get("/healthz", ""); st != http.StatusOK {
		t.Fatalf("healthz: %d", st)
	}
	stranger.expectClosed()
	silent := e.dialHTTP(t)
	silent.expectClosed()
	if st := admin.get("/v1/needs", testToken); st != http.StatusOK {
		t.Fatalf("admin call after the strangers were closed: %d", st)
	}
}
