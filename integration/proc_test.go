//go:build linux

package integration

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/cloexec"
	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/internal/procfs"
)

// newMasterDir writes a master config without a LAN manager in a fresh
// dir and returns the master as it will be, not started.
func newMasterDir(t *testing.T) *e2e.Master {
	t.Helper()
	dir := e2e.ShortDir(t)
	const size = 10
	base := e2e.FreeBlock(t, 3*size)
	e2e.WriteFile(t, dir, "allexmasterconfig.json", e2e.MasterConfig(dir, base, size, ""))
	return &e2e.Master{Dir: dir, Socket: filepath.Join(dir, "m.sock"), TCP: base, HTTP: base + size, WS: base + 2*size}
}

// masterCmd is the command of m's master, run in its dir.
func masterCmd(m *e2e.Master) *exec.Cmd {
	cmd := exec.Command(e2e.Bins.Master, "-log-level", "debug")
	cmd.Dir = m.Dir
	return cmd
}

// keeperPID reads the pid of m's keeper from its state dir.
func keeperPID(t *testing.T, m *e2e.Master) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.Dir, "state", "keeper.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(b))[0])
	if err != nil {
		t.Fatalf("keeper.pid %q: %v", b, err)
	}
	return pid
}

// openFiles maps pid's descriptors to what they point at.
func openFiles(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	out := map[int]string{}
	for _, fd := range cloexec.List(dir) {
		if target, err := os.Readlink(filepath.Join(dir, strconv.Itoa(fd))); err == nil {
			out[fd] = target
		}
	}
	if len(out) == 0 {
		t.Fatalf("cannot list the descriptors of pid %d", pid)
	}
	return out
}

// TestInheritedDescriptorsStayWithTheMaster: a file on fd 7 and a pipe on
// fd 9 that the master inherited without close-on-exec reach neither its
// keeper nor its children, which get stdin, stdout and stderr only, and
// no signal the master or keeper do not want is ignored in the child.
func TestInheritedDescriptorsStayWithTheMaster(t *testing.T) {
	m := newMasterDir(t)
	file, err := os.Create(filepath.Join(m.Dir, "leaked"))
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(pw.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	leaked := []string{file.Name(), fmt.Sprintf("pipe:[%d]", st.Ino)}
	cmd := masterCmd(m)
	cmd.ExtraFiles = []*os.File{nil, nil, nil, nil, file, nil, pw} // fds 7 and 9
	m.Proc = e2e.StartCmd(t, cmd)
	file.Close()
	pw.Close()
	m.WaitOutput("allexmaster running", 30*time.Second)
	master := openFiles(t, m.Cmd.Process.Pid)
	if master[7] != leaked[0] || master[9] != leaked[1] {
		t.Fatalf("the master did not inherit fds 7 and 9 as set up: %v", master)
	}

	e2e.MustCtl(t, m.Socket, "start", "-readiness", "none", "-restart", "never", "fds", "--", "sleep", "600")
	child := int(m.WaitState(t, "fds", allexv1.ProcessState_PROCESS_STATE_READY).GetPid())
	for name, pid := range map[string]int{"keeper": keeperPID(t, m), "child": child} {
		for fd, target := range openFiles(t, pid) {
			if slices.Contains(leaked, target) {
				t.Errorf("%s (pid %d) holds the master's inherited %s on fd %d", name, pid, target, fd)
			}
		}
	}
	if fds := slices.Sorted(maps.Keys(openFiles(t, child))); !slices.Equal(fds, []int{0, 1, 2}) {
		t.Errorf("child's descriptors %v (%v), want 0, 1, 2", fds, openFiles(t, child))
	}
	// What this test's own parent ignores is passed on, and nothing more.
	if ign, want := procStatus(t, child, "SigIgn"), procStatus(t, os.Getpid(), "SigIgn"); ign != want {
		t.Errorf("child ignores signals %s, want %s as this test", ign, want)
	}
}

// procStatus returns a field of /proc/<pid>/status.
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// readUntil reads lines from r until one contains want, and returns them.
func readUntil(t *testing.T, r *bufio.Reader, want string) []string {
	t.Helper()
	var lines []string
	for {
		l, err := r.ReadString('\n')
		lines = append(lines, l)
		if strings.Contains(l, want) {
			return lines
		}
		if err != nil {
			t.Fatalf("output ended (%v) before %q:\n%s", err, want, strings.Join(lines, ""))
		}
	}
}

// waitFile polls until the file at path holds every want.
func waitFile(t *testing.T, path string, want ...string) string {
	t.Helper()
	var got string
	e2e.Eventually(t, 60*time.Second, func() error {
		b, err := os.ReadFile(path)
		got = string(b)
		for _, w := range want {
			if !strings.Contains(got, w) {
				return fmt.Errorf("%s lacks %q (%v):\n%s", path, w, err, got)
			}
		}
		return nil
	})
	return got
}

// TestClosedStderrKeepsTheMasterRunning: the master's stdout and stderr
// are a pipe whose reader goes away; the master keeps running and serving,
// its children too, and its log and its keeper's continue in the state
// dir.
func TestClosedStderrKeepsTheMasterRunning(t *testing.T) {
	m := newMasterDir(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := masterCmd(m)
	cmd.Stdout, cmd.Stderr = pw, pw
	m.Proc = e2e.StartCmd(t, cmd)
	pw.Close()
	readUntil(t, bufio.NewReader(pr), "allexmaster running")
	pr.Close()

	// Logged at debug and info: each line is a write to the closed pipe.
	e2e.MustCtl(t, m.Socket, "start", "-readiness", "none", "-restart", "never", "late", "--", "sleep", "600")
	pid := int(m.WaitState(t, "late", allexv1.ProcessState_PROCESS_STATE_READY).GetPid())
	if exited, err := m.Exited(); exited {
		t.Fatalf("master exited: %v", err)
	}
	e2e.MustCtl(t, m.Socket, "status")
	logFile := filepath.Join(m.Dir, "state", "allexmaster.log")
	waitFile(t, logFile, "stderr failed (write /dev/stderr: broken pipe); the log continues in this file",
		fmt.Sprintf("child running: instance=late module=sleep pid=%d", pid))
	if err := syscall.Kill(pid, 0); err != nil {
		t.Errorf("child %d: %v", pid, err)
	}
	// The keeper, whose stderr is the master's, logs there too.
	e2e.MustCtl(t, m.Socket, "start", "-readiness", "none", "-restart", "never", "bg", "--", "sh", "-c", "sleep 300 & exit 0")
	waitFile(t, logFile, fmt.Sprintf("keeper[%d]: a child exited 0 and left processes running", keeperPID(t, m)))
	if err := m.Stop(30 * time.Second); err != nil {
		t.Errorf("master after SIGTERM: %v", err)
	}
	if got := waitFile(t, logFile, "allexmaster stopped"); strings.Count(got, "the log continues in this file") != 2 {
		t.Errorf("the master and the keeper did not say once each that they switched:\n%s", got)
	}
}

// TestDevClosedStdout is allexmaster -dev | head: the demo's stdout closes
// after its first line; the master runs the demo to its end, and its
// lines continue in the state dir, which is kept.
func TestDevClosedStdout(t *testing.T) {
	dir := e2e.ShortDir(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e2e.Bins.Master, "-dev", "-dev-exit", "-dev-lan-addr", "127.0.0.1:0", "-dev-needs", "1",
		"-socket", filepath.Join(dir, "m.sock"), "-dev-kills", "1", "-dev-interval", "200ms")
	cmd.Dir = dir
	cmd.Stdout = pw
	p := e2e.StartCmd(t, cmd)
	pw.Close()
	first := readUntil(t, bufio.NewReader(pr), "allex dev: LAN manager on")
	pr.Close()
	_, stateDir, ok := strings.Cut(strings.TrimSpace(first[len(first)-1]), ", state in ")
	if !ok {
		t.Fatalf("no state dir in %q", first)
	}
	t.Cleanup(func() { os.RemoveAll(stateDir) })
	if err := p.Wait(2 * time.Minute); err != nil {
		t.Fatalf("allexmaster -dev: %v", err)
	}
	waitFile(t, filepath.Join(stateDir, "allexmaster.log"), "stdout failed", "allex dev: re-satisfied demo1")
	if !strings.Contains(p.Output(), "keeping the state dir: the log continued in it") {
		t.Errorf("the master does not say where its log went:\n%s", p.Output())
	}
}

// followEvents runs allexctl events on m until the test ends, and returns
// its output once the subscription is proven live by a sentinel's events.
func followEvents(t *testing.T, m *e2e.Master) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	cmd := exec.CommandContext(ctx, e2e.Bins.Ctl, "-socket", m.Socket, "events")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	// A sentinel started before the subscription is live goes unseen: a
	// new one for each try.
	for try := range 20 {
		sentinel := fmt.Sprintf("sentinel%d", try)
		e2e.MustCtl(t, m.Socket, "start", "-readiness", "none", "-restart", "never", sentinel, "--", "true")
		for range 100 {
			if strings.Contains(out.String(), sentinel) {
				return out
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Fatalf("allexctl events shows no sentinel's events:\n%s", out.String())
	return nil
}

// TestDaemonizingProgramFails: a program that forks into the background
// and exits 0, its background process in its group or escaped with
// setsid, fails for good with the reason in ps and the events, under a
// restart-always policy, and nothing of it is left running.
func TestDaemonizingProgramFails(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	events := followEvents(t, m)
	const why = "the program daemonized; run it in the foreground"
	tests := []struct {
		instance, script string
		flags            []string
	}{
		{"ingroup", `sleep 300 & echo $! > %s; exit 0`, []string{"-protocols", "tcp", "-readiness", "ports"}},
		// redis-server --daemonize yes: the process that stays calls
		// setsid; the script waits until it has.
		{"setsid", `setsid sh -c 'echo $$ > %s; exec sleep 300' & while [ ! -s %s ]; do sleep 0.01; done; exit 0`, []string{"-readiness", "none"}},
	}
	for _, tt := range tests {
		t.Run(tt.instance, func(t *testing.T) {
			pidFile := filepath.Join(m.Dir, tt.instance+".pid")
			args := append(append([]string{"start", "-restart", "always"}, tt.flags...),
				tt.instance, "--", "sh", "-c", strings.ReplaceAll(tt.script, "%s", pidFile))
			e2e.MustCtl(t, m.Socket, args...)
			m.WaitState(t, tt.instance, allexv1.ProcessState_PROCESS_STATE_FAILED)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := e2e.Client(t, m.Socket).GetProcess(ctx, &allexv1.GetProcessRequest{Instance: tt.instance})
			if err != nil {
				t.Fatal(err)
			}
			if info := resp.GetProcess(); !strings.HasSuffix(info.GetLastError(), why) || info.GetRestarts() != 0 || info.GetExitCode() != 0 {
				t.Errorf("last error %q, restarts %d, code %d", info.GetLastError(), info.GetRestarts(), info.GetExitCode())
			}
			if ps := e2e.MustCtl(t, m.Socket, "ps"); !strings.Contains(ps, why) {
				t.Errorf("ps does not say why:\n%s", ps)
			}
			e2e.Eventually(t, 30*time.Second, func() error {
				var exited, failed bool
				for _, l := range e2e.Lines(events.String()) {
					f := strings.Fields(l)
					if len(f) < 3 || f[2] != tt.instance {
						continue
					}
					exited = exited || f[1] == "exited" && strings.HasSuffix(l, "code 0  "+why)
					failed = failed || f[1] == "failed" && strings.HasSuffix(l, why)
				}
				if !exited || !failed {
					return fmt.Errorf("events lack %s's exit and failure with %q:\n%s", tt.instance, why, events.String())
				}
				return nil
			})
			stray, err := strconv.Atoi(strings.TrimSpace(readOrEmpty(pidFile)))
			if err != nil {
				t.Fatalf("the background process's pid: %v", err)
			}
			e2e.Eventually(t, 30*time.Second, func() error {
				if st, err := procfs.ReadStat(stray); err == nil && st.Live() {
					return fmt.Errorf("background process %d still running", stray)
				}
				return nil
			})
		})
	}
	for _, tt := range tests {
		n := 0
		for _, l := range e2e.Lines(events.String()) {
			if f := strings.Fields(l); len(f) > 2 && f[1] == "starting" && f[2] == tt.instance {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s started %d times, want once:\n%s", tt.instance, n, events.String())
		}
	}
}

func readOrEmpty(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}
