//go:build linux

package spawner

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/allex-go/allex/agent/keeper"
)

// init lets this test binary be the keeper that startKeeper runs.
func init() {
	if len(os.Args) > 1 && os.Args[1] == "keeper" {
		os.Exit(keeper.Main(os.Args[2:]))
	}
}

// TestLauncherRestartsKilledChild runs a child through the keeper: a
// kill -9 restarts it as it does without.
func TestLauncherRestartsKilledChild(t *testing.T) {
	spec := helperSpec(t, "sleep")
	spec.Restart = PolicyAlways
	r := startSupervisor(t, context.Background(), spec, Options{Launcher: startKeeper(t)})
	first := r.rec.waitFor(t, EventRunning)
	// Its log file reached it through the keeper.
	sleeping := func(n int) func() bool {
		return func() bool { return strings.Count(readLog(t, spec, "stdout"), "sleeping\n") == n }
	}
	pollUntil(t, "child writes its log", sleeping(1))
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ex := r.rec.waitFor(t, EventExited)
	if ex.PID != first.PID || ex.Signal != "SIGKILL" || ex.ExitCode != -1 {
		t.Errorf("exit event %+v", ex)
	}
	second := r.rec.waitFor(t, EventRunning)
	if second.PID == first.PID {
		t.Fatalf("restarted as the same pid %d", second.PID)
	}
	pollUntil(t, "restarted child writes its log", sleeping(2))
	stopCtx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := r.s.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if alive, err := groupAlive(second.PID); err != nil || alive {
		t.Errorf("group %d alive after Stop: %v %v", second.PID, alive, err)
	}
}

// TestLauncherFenced starts a fenced child with no lease: the keeper
// refuses it, and Run fails as for a program that cannot start.
func TestLauncherFenced(t *testing.T) {
	spec := helperSpec(t, "sleep")
	spec.Fenced = true
	r := startSupervisor(t, context.Background(), spec, Options{Launcher: startKeeper(t)})
	if err := r.wait(t); err == nil || !strings.Contains(err.Error(), "no lease yet") {
		t.Fatalf("Run: %v", err)
	}
}
