//go:build linux

package lan_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
)

// TestStrangersCannotStarveLANManager: with a descriptor limit of 256,
// 1,000 connections from ten loopback addresses (the admin's and the
// master's among them) that each ask for /healthz and then stay silent
// neither block an admin call nor a master's link: the caps on
// connections without the token close the oldest waiting ones (the
// strangers' timeout is set far beyond the test, so only the caps act).
// Before them every descriptor was a stranger's, and accept failed with
// "too many open files".
func TestStrangersCannotStarveLANManager(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) is not installed")
	}
	const nofile, strangers, sources = 256, 1000, 10
	lan := e2e.StartLAN(t, e2e.LANOpts{
		Wrap:  []string{prlimit, fmt.Sprintf("--nofile=%d:%d", nofile, nofile), "--"},
		Extra: []string{"-unauth-timeout", "10m"},
	})
	addr := fmt.Sprintf("127.0.0.1:%d", lan.Port)
	deadline := time.Now().Add(wait)
	for i := range strangers {
		src := netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i%sources)})
		d := net.Dialer{Timeout: time.Until(deadline), LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("stranger %d from %s: %v", i, src, err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: lan\r\n\r\n"); err != nil {
			t.Fatalf("stranger %d: %v", i, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := lan.Client().Needs(ctx); err != nil {
		t.Fatalf("admin call with %d strangers connected: %v\n%s", strangers, err, lan.Output())
	}
	t.Logf("admin call answered in %v", time.Since(start))
	e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, 30*time.Second, "m1")

	out := lan.Output()
	if strings.Contains(out, "too many open files") {
		t.Errorf("LAN manager ran out of descriptors:\n%s", out)
	}
	if !strings.Contains(out, "closing connections without the token over the caps") {
		t.Errorf("LAN manager did not say it closed strangers:\n%s", out)
	}
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", lan.Cmd.Process.Pid)); err == nil {
		t.Logf("LAN manager holds %d descriptors of %d", len(fds), nofile)
	}
}
