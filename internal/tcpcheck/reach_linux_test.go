//go:build linux

package tcpcheck

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReachLeavesNoTimeWaitOnPort: many checks of one port all succeed
// and, once the server has closed its ends, the kernel holds no TIME_WAIT
// entry on the checked port, so the service can always bind it again; the
// entries of the closes are the checker's, as a client's are.
func TestReachLeavesNoTimeWaitOnPort(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
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
	if n := timeWaitOn(t, ap.Port()); n != 0 {
		t.Fatalf("%d TIME_WAIT entries on the checked port %d", n, ap.Port())
	}
}

// timeWaitOn counts the IPv4 TCP sockets in TIME_WAIT whose local port is
// port.
func timeWaitOn(t *testing.T, port uint16) int {
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
		_, hexPort, _ := strings.Cut(fields[1], ":")
		if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && uint16(p) == port {
			n++
		}
	}
	return n
}
