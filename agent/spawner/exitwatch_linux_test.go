//go:build linux

package spawner

import (
	"context"
	"errors"
	"golang.org/x/sys/unix"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func startSleeps(t *testing.T, n int) []*exec.Cmd {
	t.Helper()
	cmds := make([]*exec.Cmd, n)
	for i := range cmds {
		cmds[i] = exec.Command("sleep", "1000")
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmds[i].Process.Kill(); _ = cmds[i].Wait() })
	}
	return cmds
}

func TestExitWatcher(t *testing.T) {
	w, err := NewExitWatcher()
	if err != nil {
		t.Fatal(err)
	}
	cmds := startSleeps(t, 20)
	exited := make(chan int, len(cmds))
	for _, c := range cmds {
		pid := c.Process.Pid
		if err := w.watch(openPidfd(t, pid), func(gone bool) {
			if !gone {
				t.Errorf("exit of %d reported as a closed watch", pid)
			}
			exited <- pid
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Killed in reverse order: each callback must name its own process.
	for i := len(cmds) - 1; i >= 0; i-- {
		pid := cmds[i].Process.Pid
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-exited:
			if got != pid {
				t.Fatalf("exit of %d reported as %d", pid, got)
			}
		case <-time.After(waitLimit):
			t.Fatalf("exit of %d not reported", pid)
		}
	}

	// A watch still pending at Close ends with it: the supervisor then
	// waits by itself.
	late := startSleeps(t, 1)[0]
	ended := make(chan struct{})
	if err := w.watch(openPidfd(t, late.Process.Pid), func(gone bool) {
		if gone {
			t.Error("watch ended by Close reported as an exit")
		}
		close(ended)
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(waitLimit):
		t.Fatal("pending watch not ended by Close")
	}
	fd := openPidfd(t, late.Process.Pid)
	if err := w.watch(fd, func(bool) {}); !errors.Is(err, errWatcherClosed) {
		t.Fatalf("watch after Close: %v, want errWatcherClosed", err)
	}
	// A failed watch leaves the pidfd to the caller.
	if err := unix.Close(fd); err != nil {
		t.Fatalf("pidfd closed by a failed watch: %v", err)
	}
}

// TestSupervisorSharedExitWatcher runs supervisors on one watcher: each
// sees its own child's kill and restarts it; Close after they return.
func TestSupervisorSharedExitWatcher(t *testing.T) {
	w, err := NewExitWatcher()
	if err != nil {
		t.Fatal(err)
	}
	sleepPath, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	const n = 5
	type sup struct {
		s       *Supervisor
		running chan int
		errc    chan error
	}
	sups := make([]sup, n)
	for i := range sups {
		running := make(chan int, 4)
		s, err := New(Spec{Module: "m", Instance: "i" + string(rune('0'+i)), Command: sleepPath, Args: []string{"1000"}, Restart: PolicyAlways},
			Options{Exits: w, OnEvent: func(ev Event) {
				if ev.Kind == EventRunning {
					running <- ev.PID
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		sups[i] = sup{s, running, make(chan error, 1)}
		go func() { sups[i].errc <- s.Run(context.Background()) }()
	}
	for _, sp := range sups {
		pid := <-sp.running
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		select {
		case again := <-sp.running:
			if again == pid {
				t.Fatalf("restarted with the same pid %d", pid)
			}
		case <-time.After(waitLimit):
			t.Fatal("killed child not restarted")
		}
	}
	for _, sp := range sups {
		if err := sp.s.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := <-sp.errc; err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func openPidfd(t *testing.T, pid int) int {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	return fd
}
