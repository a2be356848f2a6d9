//go:build linux

package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/procfs"
)

// Prefix starts the name of every namespace this package creates:
// Prefix<pid>-<tag>.<host>, and Prefix<pid>-<tag>.switch for the switch.
const Prefix = "axlan-"

// Hosts get Subnet<i+1>/24 in the order NewLAN names them.
const (
	Subnet    = "10.200.0."
	maskBits  = 24
	maxHosts  = 200
	ipTimeout = 30 * time.Second
)

// hostName keeps host names usable in namespace and file names.
var hostName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// LAN is a switch namespace with a bridge and one namespace per host
// plugged into it.
type LAN struct {
	tag    string // <pid>-<random>, shared by every name of this LAN
	sw     string // switch namespace
	hosts  []*Host
	byName map[string]*Host
}

// NewLAN builds a LAN with one host per name (host i gets Subnet<i+1>)
// and deletes it at the end of the test. It skips the test when it is not
// root or cannot create a namespace, and fails it on any later error.
func NewLAN(t testing.TB, names ...string) *LAN {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netns: needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("netns: iproute2's ip command is not installed")
	}
	if len(names) == 0 || len(names) > maxHosts {
		t.Fatalf("netns: %d hosts: want 1 to %d", len(names), maxHosts)
	}
	if err := sweepStale(); err != nil {
		t.Logf("netns: sweeping stale namespaces: %v", err)
	}
	l := &LAN{tag: newTag(), byName: map[string]*Host{}}
	l.sw = Prefix + l.tag + ".switch"
	if err := ip("netns", "add", l.sw); err != nil {
		t.Skipf("netns: cannot create a network namespace (ip netns add): %v", err)
	}
	// Registered before anything else exists, so a half-built LAN goes too.
	t.Cleanup(func() {
		if err := l.remove(); err != nil {
			t.Errorf("netns: cleanup: %v", err)
		}
	})
	if err := l.build(names); err != nil {
		t.Fatalf("netns: %v", err)
	}
	return l
}

// newTag names this LAN: the pid says whether its creator still runs
// (see sweepStale), the random part tells apart LANs of one process.
func newTag() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// linkTag is the random part alone: link names are at most 15 bytes.
func (l *LAN) linkTag() string { return "ax" + l.tag[strings.IndexByte(l.tag, '-')+1:] }

func (l *LAN) build(names []string) error {
	br := l.linkTag() + "br"
	for _, args := range [][]string{
		{"-n", l.sw, "link", "set", "lo", "up"},
		{"-n", l.sw, "link", "add", br, "type", "bridge"},
		{"-n", l.sw, "link", "set", br, "up"},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	for i, name := range names {
		if !hostName.MatchString(name) || name == "switch" || l.byName[name] != nil {
			return fmt.Errorf("host name %q: want a unique [a-z0-9-] name other than switch", name)
		}
		h := &Host{Name: name, NS: Prefix + l.tag + "." + name, IP: Subnet + strconv.Itoa(i+1),
			sw: l.sw, port: fmt.Sprintf("%sp%d", l.linkTag(), i)}
		if err := h.plug(br, l.linkTag()+"h"); err != nil {
			return fmt.Errorf("host %s: %w", name, err)
		}
		l.hosts = append(l.hosts, h)
		l.byName[name] = h
	}
	return nil
}

// Host returns the host named name, or nil.
func (l *LAN) Host(name string) *Host { return l.byName[name] }

// Hosts returns the hosts in the order they were named.
func (l *LAN) Hosts() []*Host { return append([]*Host(nil), l.hosts...) }

// Namespaces lists the names of every namespace of the LAN, switch first.
func (l *LAN) Namespaces() []string {
	out := []string{l.sw}
	for _, h := range l.hosts {
		out = append(out, h.NS)
	}
	return out
}

// remove kills whatever still runs in the LAN's namespaces (a namespace
// outlives its name while a process is in it) and deletes them.
func (l *LAN) remove() error {
	var errs []error
	for _, ns := range append(l.Namespaces()[1:], l.sw) {
		if err := deleteNS(ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sweepStale deletes namespaces with Prefix whose creating process is
// gone: they are a crashed run's. A live creator's are left alone, since
// tests in other processes may be using them right now.
func sweepStale() error {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, Prefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(name, Prefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || processExists(pid) {
			continue
		}
		if err := deleteNS(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// deleteNS SIGKILLs the processes in namespace ns, then deletes it.
func deleteNS(ns string) error {
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+ns, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("stat namespace %s: %w", ns, err)
	}
	killIn(st.Ino)
	if err := ip("netns", "del", ns); err != nil {
		return err
	}
	return nil
}

// killIn SIGKILLs every process whose network namespace has inode ino,
// and waits (bounded) until none is left in it. Zombies have left their
// namespaces already.
func killIn(ino uint64) {
	want := "net:[" + strconv.FormatUint(ino, 10) + "]"
	deadline := time.Now().Add(5 * time.Second)
	for attempt := 0; attempt < 100 && time.Now().Before(deadline); attempt++ {
		pids := pidsIn(want)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pidsIn(nsLink string) []int {
	pids, err := procfs.Pids()
	if err != nil {
		return nil
	}
	var out []int
	for _, pid := range pids {
		if pid == os.Getpid() {
			continue
		}
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && link == nsLink {
			out = append(out, pid)
		}
	}
	return out
}

// ip runs iproute2's ip with args, bounded in time.
func ip(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
