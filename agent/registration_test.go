package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/allex-go/allex/agent/config"
	"github.com/allex-go/allex/agent/spawner"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// TestRegistrationAcrossRestart: a restart delivers the old run's exit and
// the new run's running event a few milliseconds after the new child's
// start, so the new child may register first. Its registration must
// survive the old run's exit event, the old run's socket must still be
// cleaned up, and watchers must see the new run's events in order.
func TestRegistrationAcrossRestart(t *testing.T) {
	const oldPID, newPID = 100, 200
	tests := []struct {
		name string
		// "run PID", "exit PID", "register RUN CALLER": CALLER registers
		// for the run RUN (itself, or a member of its process group).
		steps []string
		// wantReg is the pid registered at the end, 0 for none.
		wantReg    int
		wantEvents string
	}{
		{
			name:       "registered after its running event",
			steps:      []string{"run 100", "register 100 100", "exit 100", "run 200", "register 200 200"},
			wantReg:    newPID,
			wantEvents: "running:100 registered:100 exited:100 running:200 registered:200",
		},
		{
			name:       "registered before the held events arrive",
			steps:      []string{"run 100", "register 100 100", "register 200 200", "exit 100", "run 200"},
			wantReg:    newPID,
			wantEvents: "running:100 registered:100 exited:100 running:200 registered:200",
		},
		{
			name:       "a wrapped child registered before the held events arrive",
			steps:      []string{"run 100", "register 100 101", "register 200 201", "exit 100", "run 200"},
			wantReg:    newPID,
			wantEvents: "running:100 registered:101 exited:100 running:200 registered:201",
		},
		{
			name:       "exited without a new run",
			steps:      []string{"run 100", "register 100 100", "exit 100"},
			wantReg:    0,
			wantEvents: "running:100 registered:100 exited:100",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(Options{Config: config.Default()})
			if err != nil {
				t.Fatal(err)
			}
			events, cancel := a.Subscribe("")
			defer cancel()
			p := &proc{spec: &allexv1.ModuleSpec{Instance: "w1", Module: "m"}, done: make(chan struct{})}
			dir := t.TempDir()
			sockets := map[int]string{}
			for _, pid := range []int{oldPID, newPID} {
				sockets[pid] = leftSocket(t, filepath.Join(dir, fmt.Sprintf("allexprocess.%d", pid)))
			}
			for _, step := range tt.steps {
				var op string
				var pid, caller int
				if _, err := fmt.Sscan(step, &op, &pid); err != nil {
					t.Fatal(err)
				}
				if op == "register" {
					if _, err := fmt.Sscan(step, &op, &pid, &caller); err != nil {
						t.Fatal(err)
					}
				}
				switch op {
				case "run":
					a.onEvent(p, spawner.Event{Kind: spawner.EventRunning, Instance: "w1", PID: pid})
				case "exit":
					a.onEvent(p, spawner.Event{Kind: spawner.EventExited, Instance: "w1", PID: pid})
				case "register":
					a.mu.Lock()
					early := p.registerLocked(registration{run: pid, caller: caller, socket: sockets[pid]})
					a.mu.Unlock()
					if !early {
						a.publish(allexv1.EventKind_EVENT_KIND_REGISTERED, p, caller, "")
					}
				}
			}
			var got []string
			for len(events) > 0 {
				ev := <-events
				kind := strings.ToLower(strings.TrimPrefix(ev.GetKind().String(), "EVENT_KIND_"))
				got = append(got, fmt.Sprintf("%s:%d", kind, ev.GetPid()))
			}
			if g := strings.Join(got, " "); g != tt.wantEvents {
				t.Errorf("events %q, want %q", g, tt.wantEvents)
			}
			if p.reg.run != tt.wantReg || (tt.wantReg != 0 && p.reg.socket != sockets[tt.wantReg]) {
				t.Errorf("registration %+v, want pid %d", p.reg, tt.wantReg)
			}
			if p.prevReg != (registration{}) {
				t.Errorf("a dead run's registration is left: %+v", p.prevReg)
			}
			// Only a run that exited has its socket removed.
			if _, err := os.Lstat(sockets[oldPID]); !os.IsNotExist(err) {
				t.Errorf("old run's socket: %v, want it removed", err)
			}
			if tt.wantReg != 0 {
				if _, err := os.Lstat(sockets[tt.wantReg]); err != nil {
					t.Errorf("live run's socket: %v", err)
				}
			}
		})
	}
}

// leftSocket leaves a unix socket file at path that nobody serves, as a
// killed child does.
func leftSocket(t *testing.T, path string) string {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
