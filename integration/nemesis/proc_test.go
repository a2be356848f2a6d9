//go:build linux

package nemesis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/netns"
)

// The binaries under test: -nemesis.bin, or built once from this tree
// (with -race when the test has it, as internal/e2e does).
var built struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// binDir returns the directory holding allexmaster and allexlanmanager.
func binDir(t *testing.T) string {
	t.Helper()
	dir := *flagBin
	if dir == "" {
		built.once.Do(buildBinaries)
		if built.err != nil {
			t.Fatal(built.err)
		}
		dir = built.dir
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"allexmaster", "allexlanmanager"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("-nemesis.bin %s: %v", dir, err)
		}
	}
	return dir
}

func buildBinaries() {
	built.dir, built.err = os.MkdirTemp("", "nemesis-bins-")
	if built.err != nil {
		return
	}
	args := []string{"build", "-o", built.dir + "/"}
	if raceEnabled {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build the binaries: %w\n%s", err, out)
		}
		return nil
	}
	if built.err = build(append(args, "./cmd/allexmaster", "./cmd/allexlanmanager")...); built.err != nil {
		return
	}
	// The children are the product's demo child, built without -race:
	// the race detector is for the daemons under test, and dozens of
	// race-built children starting at once made the time back to one copy
	// a measure of their start-up on two cores.
	built.err = build("build", "-o", filepath.Join(built.dir, childBin), "./cmd/allexmaster")
}

// childBin is the binary the children run ("<childBin> demochild"); with
// -nemesis.bin, allexmaster when the directory has no childBin.
const childBin = "allexchild"

// proc is a daemon running inside a host's namespace, in its own process
// group (its children have groups of their own), its output in a file.
type proc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error // set before done is closed
}

// startProc runs bin with args in dir on host h, output appended to log,
// its niceness raised by nice (through nice(1), which execs: the pid is
// still bin's).
func startProc(h *netns.Host, name, dir, log string, nice int, bin string, args ...string) (*proc, error) {
	out, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := h.Command(bin, args...)
	if nice != 0 {
		cmd = h.Command("nice", append([]string{"-n", strconv.Itoa(nice), bin}, args...)...)
	}
	p := &proc{name: name, log: log, cmd: cmd, done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// wait waits at most d for the process to exit and says whether it did.
func (p *proc) wait(d time.Duration) (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(d):
		return false, nil
	}
}

func (p *proc) signal(sig syscall.Signal) error {
	if !p.running() {
		return fmt.Errorf("%s already exited (%v)", p.name, p.err)
	}
	return p.cmd.Process.Signal(sig)
}

// kill9 SIGKILLs the process alone, as a crash would end it: its children
// live on. It waits until the process is gone.
func (p *proc) kill9() error {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	if exited, _ := p.wait(30 * time.Second); !exited {
		return fmt.Errorf("%s survived SIGKILL for 30s", p.name)
	}
	return nil
}

// stop continues the process if frozen, SIGTERMs it and SIGKILLs it after
// grace.
func (p *proc) stop(grace time.Duration) error {
	if !p.running() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if exited, err := p.wait(grace); exited {
		return err
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s ignored SIGTERM for %s", p.name, grace)
}

// tail is the last n lines of a log file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// exitErr describes how a process ended: nil error is a clean exit.
func exitErr(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit 0"
	case errors.As(err, &ee):
		return ee.String()
	default:
		return err.Error()
	}
}
