//go:build !windows

package tcpcheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
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
		for _, dial := range []struct {
			name string
			fn   func(context.Context, netip.Addr, uint16, time.Duration) error
		}{{"reach", Reach}, {"net", viaNet}} {
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
