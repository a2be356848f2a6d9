package keeper

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/internal/boottime"
)

func TestExitCodesAndSignals(t *testing.T) {
	c := startClient(t, "", 0)
	e := newExits()
	pid := e.start(t, c, shell("exit 7"), false)
	if x := e.wait(t, pid); x != (exit{code: 7}) {
		t.Errorf("exit 7: got %+v", x)
	}
	pid = e.start(t, c, shell("kill -TERM $$; sleep 10"), false)
	if x := e.wait(t, pid); x != (exit{code: -1, signal: "SIGTERM"}) {
		t.Errorf("kill -TERM: got %+v", x)
	}
	if _, err := c.Start(exec.Command("/nonexistent/program"), false, func(int, string, bool, error) {}); err == nil ||
		!strings.Contains(err.Error(), "no such file") {
		t.Errorf("start of a missing program: %v", err)
	}
	// The keeper is still serving.
	pid = e.start(t, c, shell("exit 0"), false)
	if x := e.wait(t, pid); x != (exit{}) {
		t.Errorf("exit 0: got %+v", x)
	}
}

func TestStdioEnvDir(t *testing.T) {
	c := startClient(t, "", 0)
	dir := t.TempDir()
	cmd := shell(`cat; echo "out $FOO $(pwd)"; echo err >&2`)
	cmd.Env = []string{"FOO=bar", "PATH=" + os.Getenv("PATH")}
	cmd.Dir = dir
	cmd.Stdin = createFile(t, filepath.Join(dir, "in"), "in\n")
	cmd.Stdout = createFile(t, filepath.Join(dir, "out"), "")
	cmd.Stderr = createFile(t, filepath.Join(dir, "err"), "")
	e := newExits()
	if x := e.wait(t, e.start(t, c, cmd, false)); x != (exit{}) {
		t.Fatalf("exit: %+v", x)
	}
	if got, want := readFile(t, filepath.Join(dir, "out")), "in\nout bar "+dir+"\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if got := readFile(t, filepath.Join(dir, "err")); got != "err\n" {
		t.Errorf("stderr %q", got)
	}
	// No stdio attached: /dev/null.
	cmd = shell(`test "$(readlink /proc/self/fd/0)" = /dev/null`)
	if x := e.wait(t, e.start(t, c, cmd, false)); x != (exit{}) {
		t.Errorf("stdin not /dev/null: %+v", x)
	}
}

// TestNoDescriptorLeaks checks that a child gets nothing but its stdio:
// neither end of the control socket, nor the lock, nor the keeper's own.
func TestNoDescriptorLeaks(t *testing.T) {
	c := startClient(t, "", 0)
	out := filepath.Join(t.TempDir(), "fds")
	// ls lists the shell's descriptors, which are what it inherited.
	cmd := shell(`ls -l /proc/$$/fd`)
	cmd.Stdout = createFile(t, out, "")
	e := newExits()
	if x := e.wait(t, e.start(t, c, cmd, false)); x != (exit{}) {
		t.Fatalf("exit: %+v", x)
	}
	var extra []string
	for _, l := range strings.Split(readFile(t, out), "\n") {
		if f := strings.Fields(l); len(f) > 8 && f[8] != "0" && f[8] != "1" && f[8] != "2" {
			extra = append(extra, strings.Join(f[8:], " "))
		}
	}
	if len(extra) > 0 {
		t.Errorf("the child inherited %q", extra)
	}
}

// TestMasterKilled kills -9 a master that has children through its keeper:
// the keeper SIGTERMs every group, SIGKILLs the ones left at the exit
// fence, and exits.
func TestMasterKilled(t *testing.T) {
	dir := t.TempDir()
	m := startMaster(t, dir, 300*time.Millisecond, time.Hour)
	children := append(m.unfenced, m.fenced...)
	for _, pid := range children {
		if !groupAlive(t, pid) {
			t.Fatalf("group %d not running", pid)
		}
	}
	m.kill(t)
	for _, pid := range children {
		awaitGone(t, pid)
	}
	pollUntil(t, "keeper gone", func() bool { return !alive(m.keeper) })
	if _, err := os.Stat(filepath.Join(dir, pidName)); !os.IsNotExist(err) {
		t.Errorf("keeper.pid left behind: %v", err)
	}
}

// TestMasterFrozen stops (SIGSTOP) a master: its keeper still kills the
// fenced children at the end of the lease, and only them.
func TestMasterFrozen(t *testing.T) {
	m := startMaster(t, t.TempDir(), 300*time.Millisecond, 4*time.Second)
	if err := m.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for _, pid := range m.fenced {
		awaitGone(t, pid)
	}
	for _, pid := range m.unfenced {
		if !groupAlive(t, pid) {
			t.Errorf("unfenced group %d died with the lease", pid)
		}
	}
	m.kill(t)
	for _, pid := range m.unfenced {
		awaitGone(t, pid)
	}
}

func TestLease(t *testing.T) {
	c := startClient(t, "", 0)
	e := newExits()
	if _, err := e.try(c, shell(sleepGroup), true); err == nil || !strings.Contains(err.Error(), "no lease yet") {
		t.Fatalf("fenced start before any lease: %v", err)
	}
	c.SetLease(boottime.Now() + time.Hour)
	fenced := e.start(t, c, shell(sleepGroup), true)
	free := e.start(t, c, shell(sleepGroup), false)
	// Ends on the keeper's timer, or at once if the message is late.
	c.SetLease(boottime.Now() + 100*time.Millisecond)
	if x := e.wait(t, fenced); x != (exit{code: -1, signal: "SIGKILL"}) {
		t.Errorf("fenced child at the lease's end: %+v", x)
	}
	awaitGone(t, fenced)
	if _, err := e.try(c, shell(sleepGroup), true); err == nil || !strings.Contains(err.Error(), "lease ran out") {
		t.Errorf("fenced start after the lease: %v", err)
	}
	if e.ended(free) || !groupAlive(t, free) {
		t.Errorf("the unfenced child did not outlive the lease")
	}
	// A lease renewed anew lets fenced children start again.
	c.SetLease(boottime.Now() + time.Hour)
	again := e.start(t, c, shell(sleepGroup), true)
	c.SetLease(0)
	if x := e.wait(t, again); x.signal != "SIGKILL" {
		t.Errorf("fenced child after a lease in the past: %+v", x)
	}
}

func TestLeaseMovedForward(t *testing.T) {
	c := startClient(t, "", 0)
	e := newExits()
	first := boottime.Now() + time.Second
	c.SetLease(first)
	fenced := e.start(t, c, shell(sleepGroup), true)
	c.SetLease(boottime.Now() + time.Hour)
	// A reply proves the keeper has read the new lease: it came first.
	e.start(t, c, shell("exit 0"), false)
	if boottime.Now() >= first {
		t.Skip("too slow: the first lease ended before it was replaced")
	}
	time.Sleep(first - boottime.Now() + 200*time.Millisecond)
	if e.ended(fenced) || !groupAlive(t, fenced) {
		t.Errorf("the fenced child died at the end of a lease that was extended")
	}
}

// TestKeeperKilled kills -9 the keeper: the client kills its children's
// groups (grandchildren too), reports them, and starts a new keeper.
func TestKeeperKilled(t *testing.T) {
	c := startClient(t, "", 0)
	c.SetLease(boottime.Now() + time.Hour)
	e := newExits()
	a := e.start(t, c, shell(sleepGroup), false)
	b := e.start(t, c, shell(sleepGroupNoTerm), true)
	old := c.keeperPID()
	if err := unix.Kill(old, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{a, b} {
		if x := e.wait(t, pid); x.code != -1 || !errors.Is(x.err, ErrKeeperDied) {
			t.Errorf("child %d: %+v", pid, x)
		}
		awaitGone(t, pid)
	}
	var pid int
	pollUntil(t, "a start on a new keeper", func() bool {
		var err error
		pid, err = e.try(c, shell("sleep 120"), true)
		return err == nil
	})
	if now := c.keeperPID(); now == old || now == 0 {
		t.Errorf("keeper pid %d after %d died", now, old)
	}
	// The lease was handed to the new keeper: the fenced start worked.
	if !groupAlive(t, pid) {
		t.Error("child of the new keeper not running")
	}
}

// TestKeeperTerminated sends the keeper SIGTERM: its children get SIGTERM,
// SIGKILL after the exit fence, and the keeper exits 0.
func TestKeeperTerminated(t *testing.T) {
	c := startClient(t, "", 0)
	c.SetExitFence(200 * time.Millisecond)
	file := filepath.Join(t.TempDir(), "signals")
	e := newExits()
	pid := e.start(t, c, self(t, "ignoreterm", file), false)
	pollUntil(t, "child ready", func() bool { return strings.Contains(readFile(t, file), "ready") })
	c.mu.Lock()
	k := c.cur
	c.mu.Unlock()
	if err := unix.Kill(k.pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if x := e.wait(t, pid); x != (exit{code: -1, signal: "SIGKILL"}) {
		t.Errorf("child: %+v", x)
	}
	if got := readFile(t, file); got != "ready\nTERM\n" {
		t.Errorf("child saw %q", got)
	}
	select {
	case <-k.reaped:
	case <-time.After(waitLimit):
		t.Fatal("keeper did not exit")
	}
	if code := k.state.ExitCode(); code != 0 {
		t.Errorf("keeper exit: %v", k.state)
	}
}

// TestStaleKeeper starts a second keeper on a state dir whose keeper
// still runs: the old one is stopped with its children, and the old
// client does not take the dir back.
func TestStaleKeeper(t *testing.T) {
	dir := t.TempDir()
	old := startClient(t, dir, 200*time.Millisecond)
	e := newExits()
	pid := e.start(t, old, shell(sleepGroupNoTerm), false)
	oldKeeper := old.keeperPID()
	c := startClient(t, dir, 0)
	if x := e.wait(t, pid); x.code != -1 {
		t.Errorf("old keeper's child: %+v", x)
	}
	awaitGone(t, pid)
	if alive(oldKeeper) {
		t.Error("old keeper still running")
	}
	e.start(t, c, shell("exit 0"), false)
	if _, err := e.try(old, shell("exit 0"), false); err == nil {
		t.Error("the old client still starts children")
	}
	if got := keepersOf(dir); len(got) != 1 || got[0] != c.keeperPID() {
		t.Errorf("keepers of the dir: %v, want [%d]", got, c.keeperPID())
	}
}

// TestConcurrentStart starts two keepers on one state dir at once, a few
// times: at no time do two keeper processes hold the dir's lock.
func TestConcurrentStart(t *testing.T) {
	for range 3 {
		dir := t.TempDir()
		stop := make(chan struct{})
		var most int
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				most = max(most, len(keepersOf(dir)))
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
		var wg sync.WaitGroup
		clients := make([]*Client, 2)
		for i := range clients {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				defer cancel()
				c, err := Start(ctx, Options{StateDir: dir, Logger: testLogger()})
				if err == nil {
					clients[i] = c
				}
			})
		}
		wg.Wait()
		working := 0
		for _, c := range clients {
			if c == nil {
				continue
			}
			if _, err := c.Start(shell("exit 0"), false, func(int, string, bool, error) {}); err == nil {
				working++
			}
		}
		close(stop)
		<-sampled
		for _, c := range clients {
			if c != nil {
				_ = c.Close()
			}
		}
		if most > 1 || working > 1 {
			t.Fatalf("%d keepers held the lock at once; %d clients could start children", most, working)
		}
		if working == 0 {
			t.Fatal("no client could start a child")
		}
	}
}

// TestBadRequests sends the keeper packets that do not parse: each is
// refused, and the keeper serves on.
func TestBadRequests(t *testing.T) {
	c := startClient(t, "", 0)
	c.mu.Lock()
	k := c.cur
	c.mu.Unlock()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for _, p := range []struct {
		b   []byte
		oob []byte
	}{
		{b: []byte{'?', 1, 0, 0, 0}},
		{b: []byte{kindLease, 2, 0}},
		{b: (&message{kind: kindLease, id: 3, n: 1}).appendTo(nil), oob: unix.UnixRights(int(null.Fd()))},
		{b: (&message{kind: kindStart, id: 4, path: "/bin/true", stdio: [3]bool{true, true, true}}).appendTo(nil)},
		{b: (&message{kind: kindFence, id: 5, n: -1}).appendTo(nil)},
	} {
		k.wmu.Lock()
		err := k.send(p.b, p.oob, true)
		k.wmu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	e := newExits()
	if x := e.wait(t, e.start(t, c, shell("exit 3"), false)); x.code != 3 {
		t.Errorf("exit: %+v", x)
	}
}

// BenchmarkStart measures a start's round trip through the keeper: the
// request, the fork and exec of true(1), the reply. The child's exit is
// awaited outside the metric.
func BenchmarkStart(b *testing.B) {
	c := startClient(b, "", 0)
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip("no true(1)")
	}
	var total time.Duration
	n := 0
	for b.Loop() {
		done := make(chan struct{})
		t0 := time.Now()
		_, err := c.Start(exec.Command(truePath), false, func(int, string, bool, error) { close(done) })
		total += time.Since(t0)
		n++
		if err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(waitLimit):
			b.Fatal("no exit")
		}
	}
	b.ReportMetric(float64(total.Microseconds())/float64(n), "µs-start")
}
