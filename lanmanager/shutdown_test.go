package lanmanager_test

import (
	"net"
	"testing"
	"time"
)

// http.Server.Shutdown counts a connection that has sent no complete
// request as idle only after five seconds; Run must not wait for it, nor
// report it as a failed shutdown.
func TestShutdownClosesConnsWithoutRequest(t *testing.T) {
	tests := []struct {
		name string
		sent string
	}{
		{"silent", ""},
		{"half a request", "GET /healthz HTTP/1.1\r\nHost: x\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, testConfig())
			c, err := net.Dial("tcp", e.srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte(tt.sent)); err != nil {
				t.Fatal(err)
			}
			// A served request proves the server accepted c before it stops.
			if _, err := e.client.Needs(t.Context()); err != nil {
				t.Fatal(err)
			}
			e.cancel()
			e.cancel = nil
			select {
			case err := <-e.done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(4 * time.Second):
				t.Fatal("Run still waits for a connection without a request")
			}
			_ = c.SetReadDeadline(time.Now().Add(wait))
			if n, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatalf("read %d bytes from a connection the server should have closed", n)
			}
		})
	}
}
