//go:build linux

package spawner

import (
	"context"
	"errors"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/internal/tcpcheck"
)

// TestListenProbe checks the probe answers as a connect to 127.0.0.1
// would, for listeners on every kind of address, and for ports that are
// only bound or not used at all.
func TestListenProbe(t *testing.T) {
	lp, err := NewListenProbe()
	if err != nil {
		t.Skipf("no sock_diag here: %v", err)
	}
	defer lp.Close()
	tests := []struct {
		name     string
		listen   string // network address to listen on; "" binds without listening
		network  string
		want     bool
		needIPv6 bool
	}{
		{name: "127.0.0.1", listen: "127.0.0.1:0", network: "tcp4", want: true},
		{name: "wildcard", listen: "0.0.0.0:0", network: "tcp4", want: true},
		{name: "IPv6 wildcard, dual-stack", listen: "[::]:0", network: "tcp", want: true, needIPv6: true},
		{name: "::1 only", listen: "[::1]:0", network: "tcp6", want: false, needIPv6: true},
		{name: "another loopback address", listen: "127.0.0.2:0", network: "tcp4", want: false},
		{name: "bound, not listening", want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var port uint16
			if tc.listen == "" {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(fd)
				if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
					t.Fatal(err)
				}
				sa, err := unix.Getsockname(fd)
				if err != nil {
					t.Fatal(err)
				}
				port = uint16(sa.(*unix.SockaddrInet4).Port)
			} else {
				l, err := net.Listen(tc.network, tc.listen)
				if err != nil {
					if tc.needIPv6 {
						t.Skipf("no IPv6: %v", err)
					}
					t.Fatal(err)
				}
				defer l.Close()
				port = uint16(l.Addr().(*net.TCPAddr).Port)
			}
			got, err := lp.Listening(port)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Listening(%d) = %v, want %v", port, got, tc.want)
			}
			// The connect probe it stands in for agrees.
			if connected := tcpcheck.Reach(context.Background(), loopback, port, waitLimit) == nil; connected != tc.want {
				t.Fatalf("connect probe says %v", connected)
			}
		})
	}
	// A listener that closes is no longer found.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	if got, err := lp.Listening(port); err != nil || got {
		t.Fatalf("closed listener: %v, %v", got, err)
	}
	if err := lp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := lp.Listening(port); !errors.Is(err, errProbeClosed) {
		t.Fatalf("after Close: %v, want errProbeClosed", err)
	}
}

// BenchmarkListening is one question about a port with a listener and one
// about a port without, the readiness probe's (and the bench prober's)
// unit of work.
func BenchmarkListening(b *testing.B) {
	lp, err := NewListenProbe()
	if err != nil {
		b.Skipf("no sock_diag here: %v", err)
	}
	defer lp.Close()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	open := uint16(l.Addr().(*net.TCPAddr).Port)
	l2, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	closed := uint16(l2.Addr().(*net.TCPAddr).Port)
	l2.Close()
	for b.Loop() {
		if ok, err := lp.Listening(open); err != nil || !ok {
			b.Fatalf("open port: %v, %v", ok, err)
		}
		if ok, err := lp.Listening(closed); err != nil || ok {
			b.Fatalf("closed port: %v, %v", ok, err)
		}
	}
}
