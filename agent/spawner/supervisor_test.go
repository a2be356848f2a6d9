//go:build linux

// These tests use prctl and /proc; Linux is the target platform.

package spawner

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestEnvAndTemplating(t *testing.T) {
	t.Setenv("FROM_MASTER", "inherited")
	spec := helperSpec(t, "env")
	tcp, http := freePort(t), freePort(t)
	work := t.TempDir()
	spec.Ports = map[string]uint16{"tcp": tcp, "http": http}
	spec.Vars = map[string]string{"ALLEX_MASTER_SOCKET": "/tmp/sock", "ALLEX_WORKDIR": work}
	spec.Env[`CUSTOM`] = "http=${ALLEX_HTTP_PORT} sock=${ALLEX_MASTER_SOCKET}"
	spec.Args = append(spec.Args, "${ALLEX_TCP_PORT}", "${UNKNOWN}", "inst=${ALLEX_INSTANCE}")
	spec.Dir = "${ALLEX_WORKDIR}"
	r := startSupervisor(t, context.Background(), spec, Options{})
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	out := readLog(t, spec, "stdout")
	ports, _ := json.Marshal(spec.Ports)
	for _, want := range []string{
		"ALLEX_MODULE=helper\n",
		"ALLEX_INSTANCE=h1\n",
		"ALLEX_TCP_PORT=" + strconv.Itoa(int(tcp)) + "\n",
		"ALLEX_HTTP_PORT=" + strconv.Itoa(int(http)) + "\n",
		"ALLEX_WS_PORT=<unset>\n",
		"ALLEX_PORTS=" + string(ports) + "\n",
		"ALLEX_MASTER_SOCKET=/tmp/sock\n",
		"CUSTOM=http=" + strconv.Itoa(int(http)) + " sock=/tmp/sock\n",
		"FROM_MASTER=inherited\n",
		"ARGS=" + strconv.Itoa(int(tcp)) + "|${UNKNOWN}|inst=h1\n",
		"PWD=" + work + "\n",
		"--- allex: start pid ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout log lacks %q:\n%s", want, out)
		}
	}
	errOut := readLog(t, spec, "stderr")
	if !strings.Contains(errOut, "--- allex: start pid ") || !strings.Contains(errOut, "hello on stderr\n") {
		t.Errorf("stderr log: %q", errOut)
	}
	st := r.s.Status()
	if st.State != StateExited || st.ExitCode != 0 || st.PID != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestLogFilesAppendAcrossRuns(t *testing.T) {
	spec := helperSpec(t, "env")
	spec.LogDir += "/nested/logs"
	for run := range 2 {
		r := startSupervisor(t, context.Background(), spec, Options{})
		if err := r.wait(t); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
	out := readLog(t, spec, "stdout")
	if n := strings.Count(out, "--- allex: start pid "); n != 2 {
		t.Fatalf("%d headers, want 2:\n%s", n, out)
	}
	if n := strings.Count(out, "ALLEX_MODULE=helper"); n != 2 {
		t.Fatalf("%d outputs, want 2:\n%s", n, out)
	}
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{
		{spec.LogDir + "/stdout", 0o750 | os.ModeDir},
		{spec.LogDir + "/stderr", 0o750 | os.ModeDir},
		{spec.LogDir + "/stdout/h1.log", 0o640},
		{spec.LogDir + "/stderr/h1.log", 0o640},
	} {
		fi, err := os.Stat(p.path)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may only take permissions away.
		if fi.Mode()&^p.mode != 0 {
			t.Errorf("%s: mode %v, want at most %v", p.path, fi.Mode(), p.mode)
		}
	}
}

// TestSharedStdin: children of supervisors sharing Options.Stdin (the
// agent's one /dev/null) read an empty stdin, as they do from the
// /dev/null os/exec opens for each start without it.
func TestSharedStdin(t *testing.T) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	for i, opts := range []Options{{Stdin: devNull}, {Stdin: devNull}, {}} {
		spec := helperSpec(t, "stdin")
		r := startSupervisor(t, context.Background(), spec, opts)
		if err := r.wait(t); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		if out := readLog(t, spec, "stdout"); !strings.Contains(out, "STDIN=0 <nil>\n") {
			t.Errorf("child %d read its stdin as:\n%s", i, out)
		}
	}
}

func TestReadiness(t *testing.T) {
	tests := []struct {
		name      string
		behaviour string
		readiness Readiness
		probe     string // "open": a ListenProbe answers instead of connects; "closed": one that fails, so the probes connect
	}{
		{"none", "sleep", ReadyNone, ""},
		{"ports", "listen", ReadyPorts, ""},
		{"ports, listen probe", "listen", ReadyPorts, "open"},
		{"ports, failing listen probe", "listen", ReadyPorts, "closed"},
		{"sdk", "sleep", ReadySDK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := helperSpec(t, tc.behaviour)
			spec.Readiness = tc.readiness
			spec.Ports = map[string]uint16{"tcp": freePort(t)}
			var opts Options
			if tc.probe != "" {
				lp, err := NewListenProbe()
				if err != nil {
					t.Skipf("no listen probe: %v", err)
				}
				defer lp.Close()
				if tc.probe == "closed" {
					lp.Close()
				}
				opts.Listen = lp
			}
			r := startSupervisor(t, context.Background(), spec, opts)
			running := r.rec.waitFor(t, EventRunning)
			if running.PID <= 0 || running.PID != r.s.PID() {
				t.Fatalf("running pid %d, PID() %d", running.PID, r.s.PID())
			}
			if tc.readiness == ReadySDK {
				if err := r.s.MarkReady(running.PID + 1); err == nil || !strings.Contains(err.Error(), "current child is pid") {
					t.Fatalf("MarkReady(wrong pid) = %v", err)
				}
				if st := r.s.Status(); st.State != StateRunning {
					t.Fatalf("ready without MarkReady: %v", st.State)
				}
				if err := r.s.MarkReady(running.PID); err != nil {
					t.Fatalf("MarkReady: %v", err)
				}
				if err := r.s.MarkReady(running.PID); err != nil {
					t.Fatalf("second MarkReady: %v", err)
				}
			}
			ready := r.rec.waitFor(t, EventReady)
			if ready.PID != running.PID {
				t.Fatalf("ready pid %d, want %d", ready.PID, running.PID)
			}
			if st := r.s.Status(); st.State != StateReady {
				t.Fatalf("state %v after ready event", st.State)
			}
			if err := r.s.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := r.wait(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if err := r.s.MarkReady(running.PID); err == nil {
				t.Fatal("MarkReady accepted after the child is gone")
			}
			want := "starting running ready stopping exited"
			if got := strings.Join(r.rec.kinds(), " "); got != want {
				t.Fatalf("events %q, want %q", got, want)
			}
		})
	}
}

func TestGracefulStop(t *testing.T) {
	tests := []struct {
		name        string
		behaviour   string
		stopTimeout time.Duration
		wantCode    int
		wantSignal  string
		started     string
		wantLog     string
	}{
		{"handles SIGTERM", "listen", 20 * time.Second, 0, "", "listening", "got SIGTERM"},
		{"dies of SIGTERM", "sleep", 20 * time.Second, -1, "SIGTERM", "sleeping", "sleeping"},
		{"ignores SIGTERM", "ignoreterm", 500 * time.Millisecond, -1, "SIGKILL", "ignoring SIGTERM", "ignoring SIGTERM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := helperSpec(t, tc.behaviour)
			spec.Ports = map[string]uint16{"tcp": freePort(t)}
			spec.Readiness = ReadyPorts
			if tc.behaviour != "listen" {
				spec.Readiness = ReadyNone
			}
			spec.StopTimeout = tc.stopTimeout
			r := startSupervisor(t, context.Background(), spec, Options{})
			r.rec.waitFor(t, EventReady)
			// The child sets up its signal handling before it says anything.
			pollUntil(t, "child output", func() bool { return strings.Contains(readLog(t, spec, "stdout"), tc.started) })
			if err := r.s.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := r.wait(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			ev := r.rec.events()
			exited := ev[len(ev)-1]
			if exited.Kind != EventExited || exited.ExitCode != tc.wantCode || exited.Signal != tc.wantSignal {
				t.Fatalf("last event %+v, want exited code %d signal %q", exited, tc.wantCode, tc.wantSignal)
			}
			if st := r.s.Status(); st.State != StateExited || st.Signal != tc.wantSignal || st.ExitCode != tc.wantCode {
				t.Fatalf("status %+v", st)
			}
			if out := readLog(t, spec, "stdout"); !strings.Contains(out, tc.wantLog) {
				t.Fatalf("stdout lacks %q: %s", tc.wantLog, out)
			}
			assertGone(t, exited.PID)
		})
	}
}

// assertGone checks that pid no longer names a process. The child was reaped
// by the supervisor, so the kernel reports ESRCH.
func assertGone(t *testing.T, pid int) {
	t.Helper()
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Fatalf("pid %d still exists: kill(0) = %v", pid, err)
	}
}

// subreaperOnce makes this test process adopt orphaned grandchildren, so a
// test can reap one and then see it gone; PID 1 of a container may never reap.
var subreaperOnce sync.Once

func TestGrandchildKilledWithGroup(t *testing.T) {
	subreaperOnce.Do(func() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			t.Fatalf("prctl: %v", err)
		}
	})
	for _, how := range []string{"stop", "ctx cancel"} {
		t.Run(how, func(t *testing.T) {
			spec := helperSpec(t, "grandchild")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := startSupervisor(t, ctx, spec, Options{})
			r.rec.waitFor(t, EventReady)
			var gpid int
			pollUntil(t, "grandchild pid in log", func() bool {
				for line := range strings.Lines(readLog(t, spec, "stdout")) {
					if p, ok := strings.CutPrefix(strings.TrimSpace(line), "grandchild "); ok {
						gpid, _ = strconv.Atoi(p)
						return gpid > 0
					}
				}
				return false
			})
			if err := unix.Kill(gpid, 0); err != nil {
				t.Fatalf("grandchild %d not alive before stop: %v", gpid, err)
			}
			if how == "stop" {
				if err := r.s.Stop(context.Background()); err != nil {
					t.Fatal(err)
				}
			} else {
				cancel()
			}
			if err := r.wait(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			// Run waits for the group to die, so no polling here.
			if alive, err := groupAlive(r.rec.events()[1].PID); alive || err != nil {
				t.Fatalf("process group alive after Run returned (err %v)", err)
			}
			// The grandchild ignores SIGTERM, so only the group SIGKILL ends it.
			pollUntil(t, "grandchild reaped", func() bool {
				var ws unix.WaitStatus
				p, err := unix.Wait4(gpid, &ws, unix.WNOHANG, nil)
				if p == gpid {
					if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
						t.Errorf("grandchild ended with %v, want SIGKILL", ws)
					}
					return true
				}
				return errors.Is(err, unix.ECHILD)
			})
			assertGone(t, gpid)
			assertGone(t, r.rec.events()[1].PID)
		})
	}
}

func TestNotReady(t *testing.T) {
	tests := []struct {
		name      string
		behaviour string
		exitCode  string
		want      string
		wantKinds string
	}{
		{"never listens", "sleep", "", "not ready within 300ms",
			"starting running stopping exited failed"},
		{"exits 0 before ready", "exit", "0", "exited before ready (exited with code 0)",
			"starting running exited failed"},
		{"exits 4 before ready", "exit", "4", "exited before ready (exited with code 4)",
			"starting running exited failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := helperSpec(t, tc.behaviour)
			spec.Env["HELPER_EXIT_CODE"] = tc.exitCode
			spec.Ports = map[string]uint16{"tcp": freePort(t)}
			spec.Readiness = ReadyPorts
			if tc.behaviour == "sleep" {
				spec.StartTimeout = 300 * time.Millisecond
			}
			r := startSupervisor(t, context.Background(), spec, Options{})
			err := r.wait(t)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want error containing %q", err, tc.want)
			}
			if got := strings.Join(r.rec.kinds(), " "); got != tc.wantKinds {
				t.Fatalf("events %q, want %q", got, tc.wantKinds)
			}
			if tc.behaviour == "sleep" {
				if msg := r.rec.events()[2].Message; msg != tc.want {
					t.Fatalf("stopping message %q, want %q", msg, tc.want)
				}
			}
			st := r.s.Status()
			if st.State != StateFailed || !strings.Contains(st.LastError, tc.want) {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

func TestRestartPolicies(t *testing.T) {
	tests := []struct {
		name       string
		policy     Policy
		exitCode   string
		wantErr    string // empty: Run returns nil
		wantStarts int
	}{
		{"never, exit 0", PolicyNever, "0", "", 1},
		{"never, exit 2", PolicyNever, "2", "exited with code 2", 1},
		{"on-failure, exit 0", PolicyOnFailure, "0", "", 1},
		{"on-failure, exit 3 crash loops", PolicyOnFailure, "3", "crash loop: more than 2 restarts within 1m0s (last: exited with code 3)", 3},
		{"always, exit 0 restarts", PolicyAlways, "0", "crash loop: more than 2 restarts", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := helperSpec(t, "exit")
			spec.Env["HELPER_EXIT_CODE"] = tc.exitCode
			spec.Restart = tc.policy
			spec.MaxRestarts = 2
			spec.RestartWindow = time.Minute
			spec.BackoffInitial = 10 * time.Millisecond
			spec.BackoffMax = 40 * time.Millisecond
			r := startSupervisor(t, context.Background(), spec, Options{})
			err := r.wait(t)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Run: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Run = %v, want error containing %q", err, tc.wantErr)
			}
			if n := r.rec.count(EventStarting); n != tc.wantStarts {
				t.Fatalf("%d starts, want %d: %v", n, tc.wantStarts, r.rec.kinds())
			}
			if n := r.rec.count(EventBackoff); n != tc.wantStarts-1 {
				t.Fatalf("%d backoffs, want %d", n, tc.wantStarts-1)
			}
			code, _ := strconv.Atoi(tc.exitCode)
			for _, ev := range r.rec.events() {
				if ev.Kind == EventExited && ev.ExitCode != code {
					t.Fatalf("exit event %+v, want code %d", ev, code)
				}
			}
			st := r.s.Status()
			if st.Restarts != tc.wantStarts-1 {
				t.Fatalf("status restarts %d, want %d", st.Restarts, tc.wantStarts-1)
			}
			wantState := StateExited
			if tc.wantErr != "" {
				wantState = StateFailed
			}
			if st.State != wantState {
				t.Fatalf("state %v, want %v", st.State, wantState)
			}
		})
	}
}

func TestExecFailure(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Spec)
		want string
	}{
		{"missing binary path", func(s *Spec) { s.Command = "/nonexistent/allex-helper" }, "no such file"},
		{"not in PATH", func(s *Spec) { s.Command = "allex-no-such-command-here" }, "executable file not found"},
		{"missing dir", func(s *Spec) { s.Dir = "/nonexistent/dir" }, "/nonexistent/dir"},
		{"unwritable log dir", func(s *Spec) { s.LogDir = "/proc/allex-logs" }, "log dir"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := helperSpec(t, "sleep")
			spec.Restart = PolicyAlways
			tc.edit(&spec)
			r := startSupervisor(t, context.Background(), spec, Options{})
			err := r.wait(t)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want error containing %q", err, tc.want)
			}
			if got := strings.Join(r.rec.kinds(), " "); got != "starting failed" {
				t.Fatalf("events %q, want no restart", got)
			}
			if st := r.s.Status(); st.State != StateFailed || st.LastError != err.Error() {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

func TestShutdownHook(t *testing.T) {
	tests := []struct {
		name    string
		hookErr error
		wantLog string
	}{
		{"hook stops the child", nil, "got SIGINT"},
		{"hook fails, SIGTERM", errors.New("no grpc"), "got SIGTERM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := helperSpec(t, "listen")
			spec.Ports = map[string]uint16{"tcp": freePort(t)}
			spec.Readiness = ReadyPorts
			spec.StopTimeout = 20 * time.Second
			type call struct {
				pid   int
				grace time.Duration
			}
			calls := make(chan call, 1)
			hook := func(ctx context.Context, pid int, grace time.Duration) error {
				calls <- call{pid, grace}
				if tc.hookErr != nil {
					return tc.hookErr
				}
				// Stand-in for the child's own Shutdown RPC: a signal the
				// supervisor never sends.
				return unix.Kill(pid, unix.SIGINT)
			}
			r := startSupervisor(t, context.Background(), spec, Options{Shutdown: hook})
			ready := r.rec.waitFor(t, EventReady)
			if err := r.s.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := r.wait(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			c := <-calls
			if c.pid != ready.PID || c.grace != spec.StopTimeout {
				t.Fatalf("hook called with %+v, want pid %d grace %v", c, ready.PID, spec.StopTimeout)
			}
			if out := readLog(t, spec, "stdout"); !strings.Contains(out, tc.wantLog) {
				t.Fatalf("stdout lacks %q: %s", tc.wantLog, out)
			}
		})
	}
}

func TestCancelStopsChild(t *testing.T) {
	spec := helperSpec(t, "listen")
	spec.Ports = map[string]uint16{"tcp": freePort(t)}
	spec.Readiness = ReadyPorts
	ctx, cancel := context.WithCancel(context.Background())
	r := startSupervisor(t, ctx, spec, Options{})
	ready := r.rec.waitFor(t, EventReady)
	cancel()
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case <-r.s.Done():
	default:
		t.Fatal("Done not closed after Run returned")
	}
	assertGone(t, ready.PID)
	if out := readLog(t, spec, "stdout"); !strings.Contains(out, "got SIGTERM") {
		t.Fatalf("child was not stopped gracefully: %s", out)
	}
	if ev := r.rec.events(); ev[3].Kind != EventStopping || ev[3].Message != "agent shutting down" {
		t.Fatalf("stopping event %+v", ev[3])
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	spec := helperSpec(t, "exit")
	spec.Env["HELPER_EXIT_CODE"] = "1"
	spec.Restart = PolicyOnFailure
	spec.BackoffInitial = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	r := startSupervisor(t, ctx, spec, Options{})
	r.rec.waitFor(t, EventBackoff)
	cancel()
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.s.Status(); st.State != StateExited || st.ExitCode != 1 {
		t.Fatalf("status %+v", st)
	}
}

func TestRestartMethod(t *testing.T) {
	spec := helperSpec(t, "listen")
	spec.Ports = map[string]uint16{"tcp": freePort(t)}
	spec.Readiness = ReadyPorts
	r := startSupervisor(t, context.Background(), spec, Options{})
	first := r.rec.waitFor(t, EventReady)
	if err := r.s.Restart(context.Background()); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	second := r.rec.waitFor(t, EventReady)
	if second.PID == first.PID || second.PID != r.s.PID() {
		t.Fatalf("pids: first %d, second %d, now %d", first.PID, second.PID, r.s.PID())
	}
	if st := r.s.Status(); st.Restarts != 0 {
		t.Fatalf("restart counted as a crash: %+v", st)
	}
	assertGone(t, first.PID)
	if err := r.s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := r.s.Restart(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Restart after Run = %v, want ErrNotRunning", err)
	}
	want := "starting running ready stopping exited starting running ready stopping exited"
	if got := strings.Join(r.rec.kinds(), " "); got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestKilledStableChildEvents kills a child that had been serving past
// stableRun: it is restarted at once, and the events the restart holds
// back until the new child has started still arrive complete, in order,
// with times that do not go backwards.
func TestKilledStableChildEvents(t *testing.T) {
	spec := helperSpec(t, "sleep")
	spec.Restart = PolicyAlways
	r := startSupervisor(t, context.Background(), spec, Options{})
	first := r.rec.waitFor(t, EventRunning)
	time.Sleep(stableRun + 50*time.Millisecond)
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second := r.rec.waitFor(t, EventRunning)
	if second.PID == first.PID || second.PID != r.s.PID() {
		t.Fatalf("pids: first %d, second %d, now %d", first.PID, second.PID, r.s.PID())
	}
	if err := r.s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := "starting running ready exited backoff starting running ready stopping exited"
	if got := strings.Join(r.rec.kinds(), " "); got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	evs := r.rec.events()
	for i, ev := range evs {
		if i > 0 && ev.Time.Before(evs[i-1].Time) {
			t.Fatalf("event %d (%v) at %v, before event %d at %v", i, ev.Kind, ev.Time, i-1, evs[i-1].Time)
		}
	}
	exited, backoff := evs[3], evs[4]
	if exited.PID != first.PID || exited.Signal != "SIGKILL" || backoff.Delay != 0 || backoff.Restarts != 1 {
		t.Fatalf("exit %+v, backoff %+v", exited, backoff)
	}
}

func TestStopBeforeRunAndRunTwice(t *testing.T) {
	s, err := New(helperSpec(t, "sleep"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatalf("Run after Stop: %v", err)
	}
	if s.PID() != 0 || s.Status().State != StateExited {
		t.Fatalf("status %+v", s.Status())
	}
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Fatalf("second Run = %v", err)
	}
}

func TestStopTimesOutWithContext(t *testing.T) {
	spec := helperSpec(t, "ignoreterm")
	spec.StopTimeout = 5 * time.Second
	r := startSupervisor(t, context.Background(), spec, Options{})
	r.rec.waitFor(t, EventReady)
	pollUntil(t, "child output", func() bool { return strings.Contains(readLog(t, spec, "stdout"), "ignoring") })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.s.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop with done ctx = %v", err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestRestartEventsSettle: a restart's events reach OnEvent together,
// complete and in order, settle after the new child's start and not
// sooner, whether the new child is ready by then (its ready event comes
// with them) or not (it comes when the child is ready).
func TestRestartEventsSettle(t *testing.T) {
	tests := []struct {
		name        string
		listenAfter time.Duration // before the child listens
		settle      time.Duration
		wantState   State // when the new run's running event arrives
	}{
		// Long enough for a child that listens at once to be ready even
		// on a loaded machine.
		{"ready child", 0, 2 * time.Second, StateReady},
		{"slow child", time.Second, settleLimit, StateRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := helperSpec(t, "listen")
			spec.Ports = map[string]uint16{"tcp": freePort(t)}
			spec.Readiness = ReadyPorts
			spec.Restart = PolicyAlways
			spec.Env["HELPER_LISTEN_AFTER"] = tt.listenAfter.String()
			rec := newRecorder()
			var s *Supervisor
			var mu sync.Mutex
			var seen []State         // the supervisor's state at each running event
			var held []time.Duration // how long each running event waited
			opts := Options{OnEvent: func(ev Event) {
				if ev.Kind == EventRunning {
					mu.Lock()
					seen = append(seen, s.Status().State)
					held = append(held, time.Since(ev.Time))
					mu.Unlock()
				}
				rec.on(ev)
			}}
			s, err := New(spec, opts)
			if err != nil {
				t.Fatal(err)
			}
			_, stop := killOnceSettling(t, s, rec, tt.settle)
			rec.waitFor(t, EventReady)
			stop()
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 2 || seen[1] != tt.wantState {
				t.Fatalf("state at the running events: %v, want the second %v", seen, tt.wantState)
			}
			// The running event is stamped just before the timer starts.
			if held[1] < tt.settle {
				t.Fatalf("restart's running event delivered %v after it happened, want at least %v", held[1], tt.settle)
			}
		})
	}
}

// TestRestartEventsSettleEndsWithRun: a run that ends before settle (here
// stopped) delivers the restart's held events first, in order.
func TestRestartEventsSettleEndsWithRun(t *testing.T) {
	spec := helperSpec(t, "listen")
	spec.Ports = map[string]uint16{"tcp": freePort(t)}
	spec.Readiness = ReadyPorts
	spec.Restart = PolicyAlways
	rec := newRecorder()
	s, err := New(spec, Options{OnEvent: rec.on})
	if err != nil {
		t.Fatal(err)
	}
	first, stop := killOnceSettling(t, s, rec, time.Hour)
	// The new child is ready but its events are held: wait for the state.
	deadline := time.Now().Add(waitLimit)
	for st := s.Status(); st.State != StateReady || st.PID == first.PID; st = s.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("new child not ready: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := strings.Join(rec.kinds(), " "); got != "starting running ready" {
		t.Fatalf("events before the stop %q, want the restart's still held", got)
	}
	stop()
}

// killOnceSettling runs s with the given settle, kills its first child
// once it is ready and past stableRun (so the restart is immediate, the
// case whose events are held) and returns that child's ready event. stop
// stops s and checks the run's events were complete and in order.
func killOnceSettling(t *testing.T, s *Supervisor, rec *recorder, settle time.Duration) (first Event, stop func()) {
	t.Helper()
	s.settle = settle
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	first = rec.waitFor(t, EventReady)
	time.Sleep(stableRun + 50*time.Millisecond)
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return first, func() {
		t.Helper()
		if err := s.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("Run: %v", err)
		}
		want := "starting running ready exited backoff starting running ready stopping exited"
		if got := strings.Join(rec.kinds(), " "); got != want {
			t.Fatalf("events %q, want %q", got, want)
		}
	}
}
