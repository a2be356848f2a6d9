//go:build !windows

package lan_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/allex-go/allex/internal/e2e"
)

// TestLinkWithoutHelloClosed: a link that presented the token and pings
// but never says hello is closed once -hello-timeout has passed.
func TestLinkWithoutHelloClosed(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{Extra: []string{"-hello-timeout", "1s"}})
	r, _, err := dialRaw(t, lan, "silent", lan.Bearer()) // it pings every 100ms
	if err != nil {
		t.Fatal(err)
	}
	if err := r.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	// The default handlers answer pings and the close frame, and when the
	// LAN manager has already closed the socket ReadMessage returns that
	// write's broken pipe or reset instead of the close.
	r.conn.SetCloseHandler(func(code int, text string) error {
		return &websocket.CloseError{Code: code, Text: text}
	})
	r.conn.SetPingHandler(func(data string) error {
		_ = r.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	for {
		_, _, err := r.conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "no hello") {
			t.Fatalf("link ended with %v, want a close for want of a hello", err)
		}
		break
	}
	lan.WaitOutput("link sent no hello in time", wait)
}

// TestAdminInputChecks: the admin API accepts the bearer scheme in any
// case and refuses a body with a repeated key, naming it.
func TestAdminInputChecks(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	call := func(method, path, auth, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, lan.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", auth)
		resp, err := lan.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := call("GET", "/v1/needs", "bearer "+lan.Bearer(), ""); st != http.StatusOK {
		t.Errorf("lower-case bearer: %d %s", st, body)
	}
	st, body := call("POST", "/v1/needs", "Bearer "+lan.Bearer(), `{"instance":"r1","module":"demo","module":"other"}`)
	if st != http.StatusBadRequest || !strings.Contains(body, `duplicate field \"module\"`) {
		t.Errorf("repeated key: %d %s", st, body)
	}
	if n := lan.Needs(t); len(n) != 0 {
		t.Errorf("needs after a refused body: %+v", n)
	}
}
