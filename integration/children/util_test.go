//go:build !windows

package children

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// Generous bounds for a loaded 2-core machine running -race binaries.
const (
	stateTimeout = 60 * time.Second
	logTimeout   = 30 * time.Second
)

// events collects every machine event from the moment it was created.
type events struct {
	mu  sync.Mutex
	evs []*allexv1.Event
}

// watchEvents subscribes to all of m's events and returns once the
// subscription is proven live: the WatchEvents stream sends no header, so a
// throwaway sentinel process is started and its events awaited.
func watchEvents(t *testing.T, m *e2e.Master) *events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := e2e.Client(t, m.Socket).WatchEvents(ctx, &allexv1.WatchEventsRequest{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ev := &events{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := stream.Recv()
			if err != nil {
				return
			}
			ev.mu.Lock()
			ev.evs = append(ev.evs, msg.GetEvent())
			ev.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	sentinel := fmt.Sprintf("sentinel-%d", time.Now().UnixNano())
	e2e.MustCtl(t, m.Socket, "start", "-readiness", "none", "-restart", "never", sentinel, "--", "sleep", "600")
	ev.wait(t, func(e *allexv1.Event) bool { return e.GetInstance() == sentinel })
	e2e.MustCtl(t, m.Socket, "stop", "-rm", sentinel)
	return ev
}

// wait polls until some event satisfies match and returns it.
func (ev *events) wait(t *testing.T, match func(*allexv1.Event) bool) *allexv1.Event {
	t.Helper()
	var found *allexv1.Event
	e2e.Eventually(t, stateTimeout, func() error {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		for _, e := range ev.evs {
			if match(e) {
				found = e
				return nil
			}
		}
		return fmt.Errorf("no matching event among %d", len(ev.evs))
	})
	return found
}

// of returns the events of one instance so far.
func (ev *events) of(instance string) []*allexv1.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var out []*allexv1.Event
	for _, e := range ev.evs {
		if e.GetInstance() == instance {
			out = append(out, e)
		}
	}
	return out
}

func kinds(evs []*allexv1.Event) string {
	var k []string
	for _, e := range evs {
		k = append(k, strings.ToLower(strings.TrimPrefix(e.GetKind().String(), "EVENT_KIND_")))
	}
	return strings.Join(k, ",")
}

// getProcess is the master's full view of instance over gRPC.
func getProcess(t *testing.T, m *e2e.Master, instance string) *allexv1.ProcessInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := e2e.Client(t, m.Socket).GetProcess(ctx, &allexv1.GetProcessRequest{Instance: instance})
	if err != nil {
		t.Fatalf("GetProcess %s: %v", instance, err)
	}
	return resp.GetProcess()
}

// waitState polls until instance reaches want, with the generous bound.
func waitState(t *testing.T, m *e2e.Master, instance string, want allexv1.ProcessState) *allexv1.ProcessInfo {
	t.Helper()
	var info *allexv1.ProcessInfo
	e2e.Eventually(t, stateTimeout, func() error {
		info = getProcess(t, m, instance)
		if info.GetState() != want {
			return fmt.Errorf("%s is %s, want %s (last error %q)", instance, info.GetState(), want, info.GetLastError())
		}
		return nil
	})
	return info
}

// psEntry is instance's entry in `allexctl -o json ps`, as the CLI prints it.
func psEntry(t *testing.T, m *e2e.Master, instance string) map[string]any {
	t.Helper()
	out := e2e.MustCtl(t, m.Socket, "-o", "json", "ps")
	var resp struct {
		Processes []map[string]any `json:"processes"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("ps -o json: %v\n%s", err, out)
	}
	for _, p := range resp.Processes {
		if p["instance"] == instance {
			return p
		}
	}
	t.Fatalf("%s not in ps:\n%s", instance, out)
	return nil
}

// waitLogs polls `allexctl logs instance` (the child's stdout and stderr,
// which allexctl prints on its own stdout and stderr) until it contains
// every want and returns it.
func waitLogs(t *testing.T, m *e2e.Master, instance string, want ...string) string {
	t.Helper()
	var logs string
	e2e.Eventually(t, logTimeout, func() error {
		out, errOut, err := e2e.Ctl(t, m.Socket, "logs", instance)
		if err != nil {
			return fmt.Errorf("allexctl logs %s: %v: %s", instance, err, errOut)
		}
		logs = out + errOut
		for _, w := range want {
			if !strings.Contains(logs, w) {
				return fmt.Errorf("logs of %s lack %q:\n%s", instance, w, logs)
			}
		}
		return nil
	})
	return logs
}

// logLine returns the text after prefix on the first log line starting
// with it.
func logLine(t *testing.T, m *e2e.Master, instance, prefix string) string {
	t.Helper()
	for _, l := range e2e.Lines(waitLogs(t, m, instance, prefix)) {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			return rest
		}
	}
	t.Fatalf("no %q line", prefix)
	return ""
}

// noFile fails unless path is gone.
func noFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after the child exited (%v)", path, err)
	}
}

// helperPID is the pid a test helper child printed first thing ("helper
// <mode> pid <pid> instance <instance>"); the master forgets a child's pid
// once it has exited.
func helperPID(t *testing.T, m *e2e.Master, instance string) int {
	t.Helper()
	var mode string
	var pid int
	rest := logLine(t, m, instance, "helper ")
	if _, err := fmt.Sscanf(rest, "%s pid %d", &mode, &pid); err != nil || pid <= 0 {
		t.Fatalf("cannot parse the helper line %q: %v", rest, err)
	}
	return pid
}

// processAlive reports whether pid exists (as anything but a zombie we
// cannot see from here: the master reaps its children).
func processAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}
