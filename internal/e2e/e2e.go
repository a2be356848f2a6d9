//go:build !windows

// Package e2e starts the real allex binaries for end-to-end tests and
// benchmarks: it builds allexmaster, allexctl and allexlanmanager once per
// test binary (with -race when the tests run with it), runs them in their
// own process groups with their output captured, and offers the small
// polling and port helpers those tests share.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// Bins holds the paths of the binaries Main built. It is set once, before
// any test runs, and only read afterwards.
var Bins struct {
	Master, Ctl, LAN string
}

// Main is a TestMain body: when the binary runs as a test child (env
// ALLEX_TEST_HELPER set) it runs helper instead of the tests; otherwise it
// builds the binaries, runs the tests and cleans up. repoRoot is the path
// from the test package to the repository root ("..", "../..").
func Main(m *testing.M, repoRoot string, helper func() int) {
	if os.Getenv("ALLEX_TEST_HELPER") != "" && helper != nil {
		os.Exit(helper())
	}
	dir, err := os.MkdirTemp("", "allex-bins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		for _, b := range []struct {
			dst *string
			pkg string
		}{{&Bins.Master, "allexmaster"}, {&Bins.Ctl, "allexctl"}, {&Bins.LAN, "allexlanmanager"}} {
			*b.dst = filepath.Join(dir, b.pkg)
			args := []string{"build", "-o", *b.dst}
			if RaceEnabled {
				args = append(args, "-race")
			}
			cmd := exec.Command("go", append(args, "./cmd/"+b.pkg)...)
			cmd.Dir = repoRoot
			cmd.Stderr = os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n", b.pkg, err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// ShortDir returns a temp dir short enough for unix socket paths.
func ShortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ax")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Proc is a running binary with its combined output captured.
type Proc struct {
	t    testing.TB
	Cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

type lockedWriter struct{ p *Proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// Start runs a binary in dir; it is SIGTERMed (then killed) at cleanup.
func Start(t testing.TB, dir, bin string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	return StartCmd(t, cmd)
}

// StartCmd runs cmd as Start does; its stdout and stderr are captured
// unless set.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{t: t, Cmd: cmd, done: make(chan struct{})}
	if p.Cmd.Stdout == nil {
		p.Cmd.Stdout = lockedWriter{p}
	}
	if p.Cmd.Stderr == nil {
		p.Cmd.Stderr = lockedWriter{p}
	}
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(cmd.Path), p.Output())
		}
	})
	return p
}

// Output is everything the process printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Stop SIGTERMs the process and waits, SIGKILLing it after grace.
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	return p.err
}

// Exited reports whether the process has exited and its output ended,
// and how; it does not wait.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Wait waits for the process to exit on its own.
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.t.Fatalf("%s did not exit within %s; output:\n%s", p.Cmd.Path, d, p.Output())
		return nil
	}
}

// WaitOutput polls until the output contains s.
func (p *Proc) WaitOutput(s string, d time.Duration) {
	p.t.Helper()
	Eventually(p.t, d, func() error {
		if strings.Contains(p.Output(), s) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("process exited (%v) before printing %q", p.err, s)
		default:
		}
		return fmt.Errorf("output lacks %q", s)
	})
}

// Eventually retries fn until it succeeds or d passes.
func Eventually(t testing.TB, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Ctl runs allexctl against a socket and returns its stdout, stderr and error.
func Ctl(t testing.TB, socket string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Bins.Ctl, append([]string{"-socket", socket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// MustCtl runs allexctl and fails the test on error.
func MustCtl(t testing.TB, socket string, args ...string) string {
	t.Helper()
	out, errOut, err := Ctl(t, socket, args...)
	if err != nil {
		t.Fatalf("allexctl %v: %v\nstdout: %s\nstderr: %s", args, err, out, errOut)
	}
	return out
}

// Client dials the machine socket.
func Client(t testing.TB, socket string) allexv1.MachineManagerClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return allexv1.NewMachineManagerClient(conn)
}

// FreeBlock finds n consecutive ports that are free right now and were
// not handed out before in this test process, so tests never assume fixed
// ports are unused: a block is only free until its master's children bind
// it, so a second master must not be given it meanwhile. Blocks come from
// below the kernel's ephemeral range (32768 and up on Linux): there the
// source ports of the tests' own connections never land in a child's
// range, and a busy machine still has large free blocks.
func FreeBlock(t testing.TB, n int) int {
	t.Helper()
	handed.Lock()
	defer handed.Unlock()
	for attempt := 0; attempt < 500; attempt++ {
		base := rangeLow + rand.IntN(rangeHigh-rangeLow-n)
		if handed.overlaps(base, base+n) || !bindable(base, n) {
			continue
		}
		handed.blocks = append(handed.blocks, [2]int{base, base + n})
		// Cleanups run last first: the block is free again once what
		// the test started on it has stopped.
		t.Cleanup(func() { handed.release(base) })
		return base
	}
	t.Fatalf("no free block of %d ports in %d-%d", n, rangeLow, rangeHigh)
	return 0
}

// handed are the blocks FreeBlock gave out in this process.
var handed portBlocks

type portBlocks struct {
	sync.Mutex
	blocks [][2]int
}

func (h *portBlocks) release(base int) {
	h.Lock()
	defer h.Unlock()
	h.blocks = slices.DeleteFunc(h.blocks, func(b [2]int) bool { return b[0] == base })
}

func (h *portBlocks) overlaps(lo, hi int) bool {
	for _, b := range h.blocks {
		if lo < b[1] && b[0] < hi {
			return true
		}
	}
	return false
}

// WriteFile writes a file in dir.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Lines splits output into non-empty lines.
func Lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}
