//go:build !windows

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// ctlVersion is the version the built binaries report.
func ctlVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(e2e.Bins.Ctl, "-version").Output()
	v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "allexctl ")
	if err != nil || !ok {
		t.Fatalf("allexctl -version: %v %q", err, out)
	}
	return v
}

// machineNormalizer knows the master's dir and port ranges.
func machineNormalizer(t *testing.T, m *e2e.Master, size int) *normalizer {
	n := &normalizer{
		literal: []string{os.Args[0], "<helper>", m.Dir, "<dir>", ctlVersion(t), "<version>"},
		portLo:  m.TCP, portHi: m.TCP + 3*size - 1,
	}
	return n
}

// waitReady polls the master over gRPC (cheaper than allexctl) until
// instance is ready.
func waitReady(t *testing.T, m *e2e.Master, instance string) {
	t.Helper()
	waitState(t, m, instance, allexv1.ProcessState_PROCESS_STATE_READY)
}

func waitState(t *testing.T, m *e2e.Master, instance string, want allexv1.ProcessState) {
	t.Helper()
	c := e2e.Client(t, m.Socket)
	e2e.Eventually(t, 60*time.Second, func() error {
		resp, err := c.GetProcess(t.Context(), &allexv1.GetProcessRequest{Instance: instance})
		if err != nil {
			return err
		}
		if st := resp.GetProcess().GetState(); st != want {
			return fmt.Errorf("%s is %s", instance, st)
		}
		return nil
	})
}

// TestMachineCommands: the output of each machine subcommand, against a
// real allexmaster with real children, matches its golden file.
func TestMachineCommands(t *testing.T) {
	t.Parallel()
	const size = 10
	m := e2e.StartMaster(t, size, `,"machineid":"golden","modules":{"sleepy":{"command":"/bin/sleep","args":["600"]}}`)
	n := machineNormalizer(t, m, size)
	s := []string{"-socket", m.Socket}
	c := func(args ...string) result { return ctl(t, append(s, args...)...) }

	golden(t, "status", n, c("status"))
	golden(t, "version", n, c("version"), c("-o", "json", "version"))

	n.stateWord = true
	starts := []result{
		c("start", "-protocols", "tcp,http", "-readiness", "ports", "-env", "ALLEX_TEST_HELPER=listen", "web1", "--", os.Args[0]),
		c("start", "-module", "sleepy", "s1"),
		c("start", "-restart", "never", "talk", "--", "/bin/sh", "-c", `printf 'o1\no2\n'; echo e1 >&2; exec sleep 600`),
	}
	for _, inst := range []string{"web1", "s1", "talk"} {
		waitReady(t, m, inst)
	}
	golden(t, "start", n, starts...)
	n.stateWord = false

	golden(t, "ps", n, c("ps"))
	golden(t, "ports", n, c("ports"), c("ports", "web1"), c("ports", "-module", "sleepy"), c("ports", "nope"), c("ports", "a", "b"))
	e2e.Eventually(t, 30*time.Second, func() error {
		if r := c("logs", "talk"); !strings.Contains(r.stderr, "e1") || !strings.Contains(r.stdout, "o2") {
			return fmt.Errorf("talk's logs so far: %q %q", r.stdout, r.stderr)
		}
		return nil
	})
	golden(t, "logs", n, c("logs", "talk"), c("logs", "-n", "1", "talk"), c("logs", "-stream", "stderr", "talk"),
		c("logs", "-stream", "both", "talk"), c("logs", "nope"))

	// logs -f of a child that is done prints its logs and ends.
	fin := c("start", "-restart", "never", "fin", "--", "/bin/sh", "-c", "echo last words; exit 3")
	if fin.code != 0 {
		t.Fatalf("start fin: %+v", fin)
	}
	waitState(t, m, "fin", allexv1.ProcessState_PROCESS_STATE_FAILED)
	golden(t, "logs_follow", n, c("logs", "-f", "-stream", "stdout", "fin"), c("stop", "-rm", "fin"))

	n.stateWord = true
	restarted := c("restart", "s1")
	waitReady(t, m, "s1")
	golden(t, "restart", n, restarted, c("restart", "nope"), c("restart"))
	n.stateWord = false

	golden(t, "stop", n, c("stop", "talk"), c("stop", "-rm", "talk"), c("stop", "nope"), c("stop"), c("ps"))

	golden(t, "events", n, events(t, m, n))
}

// events runs `allexctl events` while a child lives and dies, and returns
// its run with only that child's lines.
func events(t *testing.T, m *e2e.Master, n *normalizer) result {
	t.Helper()
	cmd := exec.Command(e2e.Bins.Ctl, "-socket", m.Socket, "events")
	var mu sync.Mutex
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = syncWriter{&mu, &out}, syncWriter{&mu, &errb}
	p := e2e.StartCmd(t, cmd)
	seen := func(s string) bool { mu.Lock(); defer mu.Unlock(); return strings.Contains(out.String(), s) }
	// The stream is live once it shows a child's events.
	for attempt := 0; !seen(" ping "); attempt++ {
		if attempt == 20 {
			t.Fatalf("events showed nothing of 20 pings:\n%s", p.Output())
		}
		ctl(t, "-socket", m.Socket, "start", "-module", "sleepy", "ping")
		ctl(t, "-socket", m.Socket, "stop", "-rm", "ping")
	}
	ctl(t, "-socket", m.Socket, "start", "-module", "sleepy", "ev1")
	waitReady(t, m, "ev1")
	ctl(t, "-socket", m.Socket, "stop", "-rm", "ev1")
	e2e.Eventually(t, 30*time.Second, func() error {
		if !seen("removed    ev1") {
			return fmt.Errorf("events lacks ev1's removal")
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r := result{args: []string{"events"}}
	if err := p.Wait(30 * time.Second); err != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	mu.Lock()
	defer mu.Unlock()
	for _, line := range strings.SplitAfter(out.String(), "\n") {
		if strings.Contains(line, " ev1 ") {
			r.stdout += line
		}
	}
	r.stderr = errb.String()
	return r
}

type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestUsageErrors: what users get with no master running and with bad
// flags or arguments: a sentence on stderr and exit code 1, or the
// version line saying why the master's is missing.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	dir := e2e.ShortDir(t)
	none := filepath.Join(dir, "none.sock")
	n := &normalizer{literal: []string{dir, "<dir>", ctlVersion(t), "<version>"}}
	s := []string{"-socket", none}
	c := func(args ...string) result { return ctl(t, append(s, args...)...) }
	golden(t, "no_master", n, c("status"), c("ps"), c("stop", "x"), c("logs", "x"), c("version"))
	golden(t, "bad_usage", n,
		c("frobnicate"),
		c("-o", "yaml", "ps"),
		c("ps", "-bogus"),
		c("start"),
		c("start", "-protocols", "tcp,udp", "x", "--", "/bin/true"),
		c("start", "-restart", "sometimes", "x", "--", "/bin/true"),
		c("start", "-readiness", "maybe", "x", "--", "/bin/true"),
		c("start", "-fixed", "tcp=0", "x", "--", "/bin/true"),
		c("start", "x"),
		c("version", "extra"),
		c("needs"),
		// https (the default) with a bare token: refused for want of a
		// CA before the subcommand is read.
		c("-token", "t", "needs", "frob"),
		c("-lan", "http://127.0.0.1:1", "-token", "t", "needs", "frob"),
		c("needs", "ls"),
		c("-lan", "ftp://lan", "needs", "ls"),
		c("-token", "t", "services", "-since", "-1"),
	)
}
