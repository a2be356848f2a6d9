//go:build !windows

package tcpcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestReach checks Reach's own dial against listeners, a closed
// port, a full accept queue (the SYN goes unanswered) and a cancelled
// context, on loopback, both through Reach and through net.Dialer.
func TestReach(t *testing.T) {
	listen := func(t *testing.T, network, addr string) (netip.Addr, uint16) {
		t.Helper()
		l, err := net.Listen(network, addr)
		if err != nil {
			t.Skipf("cannot listen on %s: %v", addr, err)
		}
		t.Cleanup(func() { l.Close() })
		ap := l.Addr().(*net.TCPAddr).AddrPort()
		return ap.Addr().Unmap(), ap.Port()
	}
	closedPort := func(t *testing.T) (netip.Addr, uint16) {
		t.Helper()
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ap := l.Addr().(*net.TCPAddr).AddrPort()
		l.Close() // nothing listens there any more
		return ap.Addr(), ap.Port()
	}
	// fullQueue leaves a listener whose accept queue is full, so the
	// kernel drops further SYNs and a connect waits.
	fullQueue := func(t *testing.T) (netip.Addr, uint16) {
		t.Helper()
		lc := net.ListenConfig{}
		l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		rc, _ := l.(*net.TCPListener).SyscallConn()
		_ = rc.Control(func(fd uintptr) { _ = syscall.Listen(int(fd), 0) })
		ap := l.Addr().(*net.TCPAddr).AddrPort()
		for range 4 {
			c, err := net.DialTimeout("tcp4", ap.String(), 50*time.Millisecond)
			if err != nil {
				break
			}
			t.Cleanup(func() { c.Close() })
		}
		return ap.Addr(), ap.Port()
	}
	tests := []struct {
		name    string
		target  func(t *testing.T) (netip.Addr, uint16)
		cancel  bool
		wantErr error // nil: reachable
	}{
		{name: "127.0.0.1", target: func(t *testing.T) (netip.Addr, uint16) { return listen(t, "tcp4", "127.0.0.1:0") }},
		{name: "::1", target: func(t *testing.T) (netip.Addr, uint16) { return listen(t, "tcp6", "[::1]:0") }},
		{name: "closed port", target: closedPort, wantErr: syscall.ECONNREFUSED},
		{name: "full accept queue", target: fullQueue, wantErr: os.ErrDeadlineExceeded},
		{name: "cancelled", target: fullQueue, cancel: true, wantErr: context.Canceled},
	}
	for _, tc := range tests {
		for _, dial := range dials {
			t.Run(tc.name+"/"+dial.name, func(t *testing.T) {
				ip, port := tc.target(t)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tc.cancel {
					time.AfterFunc(20*time.Millisecond, cancel)
				}
				start := time.Now()
				err := dial.fn(ctx, ip, port, 200*time.Millisecond)
				if tc.wantErr == nil {
					if err != nil {
						t.Fatalf("%s:%d: %v", ip, port, err)
					}
					return
				}
				// net.Dialer reports its own timeout error.
				if !errors.Is(err, tc.wantErr) && !(tc.wantErr == os.ErrDeadlineExceeded && isTimeout(err)) {
					t.Fatalf("%s:%d: %v, want %v", ip, port, err, tc.wantErr)
				}
				if took := time.Since(start); took > 2*time.Second {
					t.Fatalf("took %v", took)
				}
			})
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dials are the two ways Reach connects.
var dials = []struct {
	name string
	fn   func(context.Context, netip.Addr, uint16, time.Duration) error
}{{"reach", Reach}, {"net", viaNet}}

// TestReachEndsWithFIN: the checked server reads the end of the stream,
// as from a client that had nothing to say, not a reset, which servers
// log as an error (python's http.server prints a traceback).
func TestReachEndsWithFIN(t *testing.T) {
	for _, dial := range dials {
		t.Run(dial.name, func(t *testing.T) {
			l, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ap := l.Addr().(*net.TCPAddr).AddrPort()
			if err := dial.fn(context.Background(), ap.Addr(), ap.Port(), 5*time.Second); err != nil {
				t.Fatal(err)
			}
			c, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("server read %d bytes, %v; want the end of the stream", n, err)
			}
		})
	}
}

// TestReachQuietForPythonHTTPServer: python3 -m http.server, checked ten
// times, logs no error.
func TestReachQuietForPythonHTTPServer(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).AddrPort().Port()
	l.Close()
	var stderr lockedBuffer
	cmd := exec.Command(py, "-m", "http.server", fmt.Sprint(port), "--bind", "127.0.0.1", "--directory", t.TempDir())
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ip := netip.MustParseAddr("127.0.0.1")
	// Wait until it listens: a refused check leaves nothing to log.
	for deadline := time.Now().Add(30 * time.Second); Reach(context.Background(), ip, port, time.Second) != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("python's http.server does not listen on %d; stderr:\n%s", port, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 10 {
		if err := Reach(context.Background(), ip, port, 5*time.Second); err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
	}
	// A request after the checks: once it is logged, python has read
	// the checks' connections, accepted before it.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), `"GET / HTTP/1.1" 200`); {
		if time.Now().After(deadline) {
			t.Fatalf("python did not log the request; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := stderr.String(); strings.Contains(out, "Traceback") || strings.Contains(out, "Exception") {
		t.Fatalf("python's http.server logged errors for the checks:\n%s", out)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
