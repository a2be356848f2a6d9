package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHandoffRefusesNoConnection: a request sent while the standby's
// server has stopped and the leader's has not started yet waits in the
// accept queue and is answered by the leader.
func TestHandoffRefusesNoConnection(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &handoff{TCPListener: tl.(*net.TCPListener)}
	standby := &http.Server{Handler: text("standby")}
	served := make(chan error, 1)
	go func() { served <- standby.Serve(ln) }()
	url := "http://" + tl.Addr().String() + "/"
	if got := get(t, url); got != "standby" {
		t.Fatalf("before the handoff: %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := standby.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != http.ErrServerClosed {
		t.Fatalf("standby's Serve: %v", err)
	}
	c, err := net.Dial("tcp", tl.Addr().String()) // in the gap
	if err != nil {
		t.Fatalf("dial during the handoff: %v", err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	leader := &http.Server{Handler: text("leader")}
	go func() { _ = leader.Serve(ln.Take()) }()
	defer leader.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := io.ReadAll(c)
	if err != nil || !strings.HasSuffix(string(resp), "\r\n\r\nleader") {
		t.Fatalf("answer to the request sent during the handoff: %q, %v", resp, err)
	}
}

func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, s) })
}

func get(t *testing.T, url string) string {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		t.Error(err)
		return ""
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return string(b)
}
