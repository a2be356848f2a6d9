//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Host is one machine of the LAN: a network namespace with loopback and
// one interface on the LAN's bridge.
type Host struct {
	Name string
	// NS is the namespace's name, as `ip netns` knows it.
	NS string
	// IP is the host's address on the LAN (no mask).
	IP string

	sw, port string // the switch namespace and the host's port in it

	mu  sync.Mutex
	cut bool
}

// plug creates the host's namespace and a veth pair from the switch's
// bridge into it (named eth in the host), addressed and up. Both ends are
// created where they live: nothing appears in the root namespace.
func (h *Host) plug(bridge, eth string) error {
	addr := h.IP + "/" + strconv.Itoa(maskBits)
	for _, args := range [][]string{
		{"netns", "add", h.NS},
		{"-n", h.sw, "link", "add", h.port, "type", "veth", "peer", "name", eth, "netns", h.NS},
		{"-n", h.sw, "link", "set", h.port, "master", bridge},
		{"-n", h.sw, "link", "set", h.port, "up"},
		{"-n", h.NS, "link", "set", "lo", "up"},
		{"-n", h.NS, "addr", "add", addr, "dev", eth},
		{"-n", h.NS, "link", "set", eth, "up"},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	return nil
}

// Command runs name inside the host's namespace through `ip netns exec`,
// which execs it: the started process's pid is the program's own.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Cut takes the host's port on the switch down: from then on nothing it
// sends reaches the LAN and nothing reaches it, while it keeps its address
// and learns of the cut only through silence (and the lost carrier of its
// interface, which nothing in allex watches).
func (h *Host) Cut() error { return h.setPort(true) }

// Heal puts the host's port on the switch back up.
func (h *Host) Heal() error { return h.setPort(false) }

// IsCut reports whether the host is cut off now.
func (h *Host) IsCut() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cut
}

// Block drops everything the host sends to ip, by a blackhole route in
// its namespace; blocking both ends is a partition between two hosts
// only, each still on the LAN.
func (h *Host) Block(ip string) error { return h.route("add", ip) }

// Unblock removes a Block.
func (h *Host) Unblock(ip string) error { return h.route("del", ip) }

func (h *Host) route(op, to string) error {
	if err := ip("-n", h.NS, "route", op, "blackhole", to+"/32"); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	return nil
}

func (h *Host) setPort(cut bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	state := "up"
	if cut {
		state = "down"
	}
	if err := ip("-n", h.sw, "link", "set", h.port, state); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	h.cut = cut
	return nil
}

// DialContext dials addr (an IP literal and port: a name would be resolved
// on other threads, outside the namespace) from inside the host's
// namespace. A socket stays in the namespace it was created in, so the
// returned connection works from any goroutine.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNS(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	if err != nil && c != nil {
		c.Close()
		return nil, err
	}
	return c, err
}

// Listen listens on addr inside the host's namespace.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.inNS(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil && ln != nil {
		ln.Close()
		return nil, err
	}
	return ln, err
}

// HTTPClient is an HTTP client whose connections start in the host's
// namespace, with timeout bounding each request. URLs must name IPs.
func (h *Host) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:         h.DialContext,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// inNS runs fn on a thread of its own switched into the host's namespace.
// Go keeps a locked thread to its goroutine and never clones new threads
// from it, so nothing else runs there meanwhile. The thread switches back
// afterwards; if it cannot, it stays locked and dies with the goroutine
// rather than serve others from the wrong namespace.
func (h *Host) inNS(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored, err := h.switchedRun(fn)
		if restored {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

func (h *Host) switchedRun(fn func() error) (restored bool, err error) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return true, fmt.Errorf("netns: own namespace: %w", err)
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + h.NS)
	if err != nil {
		return true, fmt.Errorf("netns: host %s: %w", h.Name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("netns: enter %s: %w", h.NS, err)
	}
	err = fn()
	if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
		return false, errors.Join(err, fmt.Errorf("netns: leave %s: %w", h.NS, rerr))
	}
	return true, err
}
