//go:build linux

package netns

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// echoOn serves a line echo on h's address.
func echoOn(t *testing.T, h *Host) string {
	t.Helper()
	ln, err := h.Listen("tcp", h.IP+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := c.Write(append(sc.Bytes(), '\n')); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, from *Host, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := from.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends a line and reads it back within d.
func exchange(c net.Conn, line string, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return err
	}
	return expectLine(c, line, d)
}

func expectLine(c net.Conn, line string, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != line {
		return errors.New("echo: got " + strconv.Quote(got) + ", want " + line)
	}
	return nil
}

func TestHostsTalk(t *testing.T) {
	lan := NewLAN(t, "a", "b")
	a, b := lan.Host("a"), lan.Host("b")
	if a.IP != Subnet+"1" || b.IP != Subnet+"2" {
		t.Fatalf("addresses %s, %s", a.IP, b.IP)
	}
	if err := exchange(dial(t, a, echoOn(t, b)), "hello", 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// The HTTP client dials from a's namespace too.
	ln, err := b.Listen("tcp", b.IP+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.RemoteAddr)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	resp, err := a.HTTPClient(5 * time.Second).Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), a.IP+":") {
		t.Fatalf("b saw the request from %q, want %s", body, a.IP)
	}

	// Commands run in the host's namespace, which holds its address only.
	out, err := a.Command("ip", "-o", "-4", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr in %s: %v\n%s", a.NS, err, out)
	}
	if !strings.Contains(string(out), a.IP+"/24") || strings.Contains(string(out), b.IP) {
		t.Fatalf("host a's addresses:\n%s", out)
	}

	// The root namespace (this process's) gained no address.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ad := range addrs {
		if strings.HasPrefix(ad.String(), Subnet) {
			t.Fatalf("root namespace has %s", ad)
		}
	}
}

func TestCutStallsAndHealRestores(t *testing.T) {
	lan := NewLAN(t, "a", "b")
	a, b := lan.Host("a"), lan.Host("b")
	toB := dial(t, a, echoOn(t, b))
	if err := exchange(toB, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	toA := echoOn(t, a)

	if err := a.Cut(); err != nil {
		t.Fatal(err)
	}
	if !a.IsCut() {
		t.Fatal("IsCut false after Cut")
	}
	// Silence, not an error: the write is accepted and the read times out.
	err := exchange(toB, "during", time.Second)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("exchange over a cut link: %v, want a timeout", err)
	}
	// Nor does anything reach the cut host.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if c, err := b.DialContext(ctx, "tcp", toA); err == nil {
		c.Close()
		t.Fatal("b reached the cut host a")
	}

	if err := a.Heal(); err != nil {
		t.Fatal(err)
	}
	// TCP retransmits what was stalled; its backoff after a second of
	// loss is a few seconds.
	if err := expectLine(toB, "during", 20*time.Second); err != nil {
		t.Fatalf("stalled line after Heal: %v", err)
	}
	if err := exchange(dial(t, b, toA), "after", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestBlockPartitionsTwoHosts: a and b blocking each other cannot talk,
// each still talks to c, and they talk again once unblocked.
func TestBlockPartitionsTwoHosts(t *testing.T) {
	lan := NewLAN(t, "a", "b", "c")
	a, b, c := lan.Host("a"), lan.Host("b"), lan.Host("c")
	toA, toB, toC := echoOn(t, a), echoOn(t, b), echoOn(t, c)
	for _, x := range [][2]*Host{{a, b}, {b, a}} {
		if err := x[0].Block(x[1].IP); err != nil {
			t.Fatal(err)
		}
	}
	try := func(from *Host, to string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := from.DialContext(ctx, "tcp", to)
		if err == nil {
			conn.Close()
		}
		return err
	}
	if try(a, toB) == nil || try(b, toA) == nil {
		t.Fatal("a and b reached each other while blocked")
	}
	if err := exchange(dial(t, a, toC), "a", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := exchange(dial(t, b, toC), "b", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, x := range [][2]*Host{{a, b}, {b, a}} {
		if err := x[0].Unblock(x[1].IP); err != nil {
			t.Fatal(err)
		}
	}
	if err := exchange(dial(t, a, toB), "healed", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestCleanupLeavesNothing(t *testing.T) {
	var names []string
	var cmd *exec.Cmd
	t.Run("lan", func(t *testing.T) {
		lan := NewLAN(t, "a", "b")
		names = lan.Namespaces()
		// Left running on purpose: cleanup must kill it, or its namespace
		// would outlive its name.
		cmd = lan.Host("a").Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// ip netns exec enters the namespace before it execs sleep.
		comm := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/comm"
		for i := 0; i < 500; i++ {
			if b, _ := os.ReadFile(comm); strings.TrimSpace(string(b)) == "sleep" {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("ip netns exec did not exec sleep within 5s")
	})
	if cmd == nil {
		t.Skip("the LAN was skipped")
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("a process in the LAN outlived its cleanup")
	}
	for _, ns := range names {
		if _, err := os.Stat("/run/netns/" + ns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left behind (%v)", ns, err)
		}
	}
}

func TestSweepsStaleNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// A pid that just finished names a crashed creator.
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Skip("no true(1)")
	}
	stale := Prefix + strconv.Itoa(done.Process.Pid) + "-000000.x"
	if err := ip("netns", "add", stale); err != nil {
		t.Skipf("cannot create a namespace: %v", err)
	}
	t.Cleanup(func() { _ = deleteNS(stale) })
	// A live process's namespace must survive the sweep.
	live := NewLAN(t, "a")
	NewLAN(t, "b")
	if _, err := os.Stat("/run/netns/" + stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale namespace %s not swept (%v)", stale, err)
	}
	if _, err := os.Stat("/run/netns/" + live.Host("a").NS); err != nil {
		t.Fatalf("live namespace swept: %v", err)
	}
}
