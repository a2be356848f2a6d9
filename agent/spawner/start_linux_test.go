//go:build linux

package spawner

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/internal/procfs"
)

// TestRunningStartTicks restarts a child and checks every running event
// that gives a start time gives the one /proc has.
func TestRunningStartTicks(t *testing.T) {
	r := startSupervisor(t, context.Background(), helperSpec(t, "sleep"), Options{})
	given := 0
	for i := range 10 {
		ev := r.rec.waitFor(t, EventRunning)
		if ev.StartTicks != 0 {
			given++
			st, err := procfs.ReadStat(ev.PID)
			if err != nil {
				t.Fatal(err)
			}
			if st.StartTime != ev.StartTicks {
				t.Fatalf("run %d: start ticks %d, /proc says %d", i, ev.StartTicks, st.StartTime)
			}
		}
		if i < 9 {
			if err := r.s.Restart(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if given == 0 {
		t.Fatal("no running event gave a start time in 10")
	}
	if err := r.s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestForkExec starts programs the way the supervisor does, without
// os/exec's Start: stdio files are the child's, nil ones are /dev/null,
// anything else is refused, and a missing program fails as os/exec says.
func TestForkExec(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests := []struct {
		name    string
		cmd     *exec.Cmd
		wantOut string
		wantErr string
	}{
		{
			name:    "stdout to a file, stdin /dev/null, env as given",
			cmd:     &exec.Cmd{Path: sh, Args: []string{"sh", "-c", `read x; echo "[$x] $FOO"`}, Stdout: f, Env: []string{"FOO=bar"}},
			wantOut: "[] bar\n",
		},
		{name: "stdio not a file", cmd: &exec.Cmd{Path: sh, Args: []string{"sh"}, Stdout: &bytes.Buffer{}}, wantErr: "not a file"},
		{name: "missing program", cmd: &exec.Cmd{Path: "/nonexistent/allex-helper"}, wantErr: "fork/exec /nonexistent/allex-helper: no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.Truncate(0); err != nil {
				t.Fatal(err)
			}
			pid, pidfd, err := forkExec(tc.cmd)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			reapSuccess(t, pid, pidfd)
			if got, _ := os.ReadFile(out); string(got) != tc.wantOut {
				t.Fatalf("output %q, want %q", got, tc.wantOut)
			}
		})
	}
}

// reapSuccess closes the pidfd forkExec returned (if any), reaps pid and
// fails tb unless it exited 0.
func reapSuccess(tb testing.TB, pid, pidfd int) {
	tb.Helper()
	if pidfd >= 0 {
		unix.Close(pidfd)
	}
	if e := wait4(pid); e.code != 0 || e.err != nil {
		tb.Fatalf("child ended %s", e.how())
	}
}

// BenchmarkForkExecOpenPidfds times forkExec of /bin/true (until its exec
// has succeeded, which is when forkExec returns) with extra close-on-exec
// pidfds open, as the master holds one per child: each forked child gets
// a copy of them, and its exec closes them all. ns/op also counts the
// child's run and reaping; forkexec-ns/op is forkExec alone.
func BenchmarkForkExecOpenPidfds(b *testing.B) {
	for _, k := range []int{0, 500, 1000} {
		b.Run(fmt.Sprintf("pidfds=%d", k), func(b *testing.B) {
			for range k {
				fd, err := unix.PidfdOpen(os.Getpid(), 0)
				if err != nil {
					b.Skip("pidfd_open:", err)
				}
				b.Cleanup(func() { unix.Close(fd) })
			}
			cmd := &exec.Cmd{Path: "/bin/true", Args: []string{"true"}}
			var forking time.Duration
			for b.Loop() {
				t0 := time.Now()
				pid, pidfd, err := forkExec(cmd)
				forking += time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				reapSuccess(b, pid, pidfd)
			}
			b.ReportMetric(float64(forking.Nanoseconds())/float64(b.N), "forkexec-ns/op")
		})
	}
}
