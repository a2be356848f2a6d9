package keeper

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/internal/boottime"
	"github.com/allex-go/allex/internal/procfs"
)

// helperLife bounds every helper process, so a failed test leaves
// nothing running for long.
const helperLife = 60 * time.Second

// sleepGroup is a child whose process group holds two processes, so a
// test sees whether the whole group died; ignoring SIGTERM, only a
// SIGKILL ends it.
const (
	sleepGroup       = "sleep 120 & sleep 120"
	sleepGroupNoTerm = "trap '' TERM; sleep 120 & sleep 120"
)

// helperMaster is a master for the tests: it starts a keeper on args[0]
// with the exit fence args[1] and a lease of args[2], starts sleepGroup
// and sleepGroupNoTerm, each unfenced and fenced, prints the keeper's pid
// and theirs on one line and waits to be killed.
func helperMaster(args []string) int {
	fence, err1 := time.ParseDuration(args[1])
	lease, err2 := time.ParseDuration(args[2])
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, err1, err2)
		return 2
	}
	c, err := Start(context.Background(), Options{StateDir: args[0], ExitFence: fence, Logger: testLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c.SetLease(boottime.Now() + lease)
	pids := []string{strconv.Itoa(c.keeperPID())}
	for _, script := range []string{sleepGroup, sleepGroupNoTerm} {
		for _, fenced := range []bool{false, true} {
			pid, err := c.Start(shell(script), fenced, func(int, string, bool, error) {})
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			pids = append(pids, strconv.Itoa(pid))
		}
	}
	fmt.Println(strings.Join(pids, " "))
	time.Sleep(helperLife)
	return 0
}

// helperChild is a child process of the tests, by args[0]:
// "ignoreterm FILE" writes "ready"
// to FILE, then "TERM" at each SIGTERM, and lives on.
func helperChild(args []string) int {
	switch args[0] {
	case "ignoreterm":
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		appendFile(args[1], "ready\n")
		deadline := time.After(helperLife)
		for {
			select {
			case <-term:
				appendFile(args[1], "TERM\n")
			case <-deadline:
				return 0
			}
		}
	}
	fmt.Fprintf(os.Stderr, "unknown child %q\n", args)
	return 2
}

func appendFile(name, s string) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err == nil {
		_, _ = f.WriteString(s)
		_ = f.Close()
	}
}

func testLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "test", Output: os.Stderr, Level: hclog.Warn})
}

// shell is `sh -c script`, ready for Client.Start.
func shell(script string) *exec.Cmd {
	return exec.Command("/bin/sh", "-c", script)
}

// self is this test binary run as a helper child.
func self(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exec.Command(exe, append([]string{"child"}, args...)...)
}

// startClient starts a keeper on dir (a new temp dir if empty), closed
// at the end of the test.
func startClient(t testing.TB, dir string, fence time.Duration) *Client {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := Start(ctx, Options{StateDir: dir, ExitFence: fence, Logger: testLogger()})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// exit is one call of an exited callback.
type exit struct {
	code   int
	signal string
	strays bool
	err    error
}

// exits records the exited callbacks of the children a test starts.
type exits struct {
	mu sync.Mutex
	by map[int]exit
	ch chan int // pids, as they exit
}

func newExits() *exits { return &exits{by: map[int]exit{}, ch: make(chan int, 100)} }

// start starts cmd through c and records its end; it fails the test if
// the start fails.
func (e *exits) start(t testing.TB, c *Client, cmd *exec.Cmd, fenced bool) int {
	t.Helper()
	pid, err := e.try(c, cmd, fenced)
	if err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	return pid
}

func (e *exits) try(c *Client, cmd *exec.Cmd, fenced bool) (int, error) {
	var pid int
	var once sync.Once
	ready := make(chan struct{})
	pid, err := c.Start(cmd, fenced, func(code int, sig string, strays bool, err error) {
		<-ready // pid is set
		once.Do(func() {
			e.mu.Lock()
			e.by[pid] = exit{code, sig, strays, err}
			e.mu.Unlock()
			e.ch <- pid
		})
	})
	close(ready)
	return pid, err
}

// wait waits for pid's exited callback.
func (e *exits) wait(t testing.TB, pid int) exit {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	for {
		e.mu.Lock()
		x, ok := e.by[pid]
		e.mu.Unlock()
		if ok {
			return x
		}
		select {
		case <-e.ch:
		case <-timer.C:
			t.Fatalf("pid %d: no exit within %v", pid, waitLimit)
		}
	}
}

func (e *exits) ended(pid int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.by[pid]
	return ok
}

// awaitGone waits until no process of group pgid is alive.
func awaitGone(t testing.TB, pgid int) {
	t.Helper()
	pollUntil(t, fmt.Sprintf("process group %d gone", pgid), func() bool {
		alive, err := procfs.GroupAlive(pgid)
		return err == nil && !alive
	})
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	st, err := procfs.ReadStat(pid)
	return err == nil && st.Live()
}

func groupAlive(t testing.TB, pgid int) bool {
	t.Helper()
	ok, err := procfs.GroupAlive(pgid)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// pollUntil retries cond every 10ms until it holds or waitLimit passes.
func pollUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, waitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readFile(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func createFile(t testing.TB, name, content string) *os.File {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// keepersOf lists this process's children that hold dir's keeper.lock
// open: keepers of dir (the client's own copy is in this process).
func keepersOf(dir string) []int {
	lock := filepath.Join(dir, lockName)
	var out []int
	pids, _ := procfs.Pids()
	for _, pid := range pids {
		if ppid, ok := parentOf(pid); !ok || ppid != os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
		for _, fd := range fds {
			if target, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name()); target == lock {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// master is a helperMaster process.
type master struct {
	cmd      *exec.Cmd
	keeper   int
	unfenced []int // sleepGroup, sleepGroupNoTerm
	fenced   []int
}

// startMaster runs helperMaster and waits for its children to start.
func startMaster(t testing.TB, dir string, fence, lease time.Duration) *master {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "master", dir, fence.String(), lease.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	var pids []int
	select {
	case s := <-line:
		for _, f := range strings.Fields(s) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("master said %q", s)
			}
			pids = append(pids, pid)
		}
	case <-time.After(waitLimit):
		t.Fatal("master did not start its children")
	}
	if len(pids) != 5 {
		t.Fatalf("master said %v", pids)
	}
	return &master{cmd: cmd, keeper: pids[0], unfenced: []int{pids[1], pids[3]}, fenced: []int{pids[2], pids[4]}}
}

// kill kills -9 the master.
func (m *master) kill(t testing.TB) {
	t.Helper()
	if err := m.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = m.cmd.Wait()
}
