package spawner

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDaemonized(t *testing.T) {
	const limit = time.Minute
	for _, tt := range []struct {
		name   string
		e      ended
		uptime time.Duration
		want   bool
	}{
		{"exit 0 leaving processes", ended{strays: true}, time.Second, true},
		{"exit 0 alone", ended{}, time.Second, false},
		{"exit 0 leaving processes after the start timeout", ended{strays: true}, limit, false},
		{"exit 3 leaving processes", ended{code: 3, strays: true}, time.Second, false},
		{"killed", ended{code: -1, signal: "SIGKILL", strays: true}, time.Second, false},
		{"wait failed", ended{code: -1, err: errors.New("wait4"), strays: true}, time.Second, false},
	} {
		if got := daemonized(tt.e, tt.uptime, limit); got != tt.want {
			t.Errorf("%s: daemonized = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// shellSpec runs script with /bin/sh, restarted always.
func shellSpec(t *testing.T, script string) Spec {
	t.Helper()
	return Spec{
		Module: "sh", Instance: "daemon1", Command: "/bin/sh", Args: []string{"-c", script},
		Restart: PolicyAlways, BackoffInitial: time.Millisecond, BackoffMax: time.Millisecond,
		StartTimeout: waitLimit, StopTimeout: waitLimit, LogDir: t.TempDir(),
	}
}

// TestDaemonizedChildFails: a program that forks into the background and
// exits 0 fails for good with the reason, under a restart-always policy,
// and nothing of it is left; with the keeper and without.
func TestDaemonizedChildFails(t *testing.T) {
	for _, keeper := range []bool{false, true} {
		name := "fork"
		if keeper {
			name = "keeper"
		}
		t.Run(name, func(t *testing.T) {
			opts := Options{}
			if keeper {
				opts.Launcher = startKeeper(t)
			}
			r := startSupervisor(t, context.Background(), shellSpec(t, "sleep 300 & exit 0"), opts)
			err := r.wait(t)
			if err == nil || !strings.HasSuffix(err.Error(), daemonizedWhy) {
				t.Fatalf("Run = %v, want %q", err, daemonizedWhy)
			}
			if got := strings.Join(r.rec.kinds(), " "); got != "starting running ready exited failed" {
				t.Errorf("events %q, want one run", got)
			}
			var pid int
			for _, ev := range r.rec.events() {
				if ev.Kind == EventExited {
					pid = ev.PID
					if ev.Message != daemonizedWhy || ev.ExitCode != 0 {
						t.Errorf("exit event %+v", ev)
					}
				}
			}
			if st := r.s.Status(); st.State != StateFailed || st.Restarts != 0 || st.LastError != err.Error() {
				t.Errorf("status %+v", st)
			}
			if alive, err := groupAlive(pid); alive || err != nil {
				t.Errorf("group %d alive after Run: %v %v", pid, alive, err)
			}
		})
	}
}

// TestLateExitLeavingProcessesIsNoDaemon: a program that ran past its
// start timeout and exits 0 leaving a process behind is an ordinary
// exit; the process is killed with the group.
func TestLateExitLeavingProcessesIsNoDaemon(t *testing.T) {
	spec := shellSpec(t, "sleep 300 & sleep 1; exit 0")
	spec.Restart = PolicyNever
	spec.StartTimeout = 100 * time.Millisecond
	r := startSupervisor(t, context.Background(), spec, Options{})
	if err := r.wait(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	ex := r.rec.waitFor(t, EventExited)
	if ex.Message != "exited with code 0" {
		t.Errorf("exit event %+v", ex)
	}
	if alive, err := groupAlive(ex.PID); alive || err != nil {
		t.Errorf("group %d alive after Run: %v %v", ex.PID, alive, err)
	}
}
