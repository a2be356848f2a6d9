//go:build linux

package tcpcheck

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// TestReachLeavesNoTimeWaitOnPort: many checks of one port all succeed
// and, once the server has closed its ends, the kernel holds no TIME_WAIT
// entry on the checked port, so the service can always bind it again; the
// entries of the closes are the checker's, as a client's are.
func TestReachLeavesNoTimeWaitOnPort(t *testing.T) {
	// An address of its own: other processes' connections from
	// 127.0.0.1 may use the same port number as a local port.
	l, err := net.Listen("tcp4", "127.0.0.77:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ap := l.Addr().(*net.TCPAddr).AddrPort()
	const checks = 500
	served := make(chan error, 1)
	go func() {
		// The server closes each connection when it reads its end.
		for range checks {
			c, err := l.Accept()
			if err != nil {
				served <- err
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
			if !errors.Is(err, io.EOF) {
				served <- err
				return
			}
		}
		served <- nil
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range checks {
		if err := Reach(ctx, ap.Addr(), ap.Port(), 5*time.Second); err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
	if n := timeWaitOn(t, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())); n != 0 {
		t.Fatalf("%d TIME_WAIT entries on the checked port %d", n, ap.Port())
	}
}

// timeWaitOn counts the IPv4 TCP sockets in TIME_WAIT whose local address
// is ap.
func timeWaitOn(t *testing.T, ap netip.AddrPort) int {
	a := ap.Addr().As4()
	// /proc/net/tcp writes the address as a host-order (little-endian here)
	// hex word, then the port.
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "06" { // 06: TIME_WAIT
			continue
		}
		if fields[1] == want {
			n++
		}
	}
	return n
}
