package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/agent/config"
	"github.com/allex-go/allex/agent/needs"
	"github.com/allex-go/allex/agent/spawner"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/lanwire"
)

// TestNeedProtocols: a need without protocols takes its module's; one
// asking for a protocol its module does not declare, or fixing a port of
// a protocol it does not get, is refused with the reason.
func TestNeedProtocols(t *testing.T) {
	tests := []struct {
		name   string
		need   lanwire.Need
		module []string
		want   []string
		err    string
	}{
		{"none takes the module's", lanwire.Need{Instance: "w", Module: "web"}, []string{"tcp", "http"}, []string{"tcp", "http"}, ""},
		{"a subset", lanwire.Need{Instance: "w", Module: "web", Protocols: []string{"http"}}, []string{"tcp", "http"}, []string{"http"}, ""},
		{"module declares none", lanwire.Need{Instance: "w", Module: "web", Protocols: []string{"ws"}}, nil, []string{"ws"}, ""},
		{"neither", lanwire.Need{Instance: "w", Module: "web"}, nil, nil, ""},
		{"fixed port of the module's protocol", lanwire.Need{Instance: "w", Module: "web", FixedPorts: lanwire.Ports{"http": 8080}}, []string{"http"}, []string{"http"}, ""},
		{"conflict", lanwire.Need{Instance: "w", Module: "web", Protocols: []string{"http", "ws"}}, []string{"tcp", "http"}, nil,
			"need w asks for protocol ws, which module web does not declare on this master (its protocols: tcp,http)"},
		{"fixed port of another protocol", lanwire.Need{Instance: "w", Module: "web", Protocols: []string{"http"}, FixedPorts: lanwire.Ports{"tcp": 9000}}, []string{"tcp", "http"}, nil,
			"need w: fixed tcp port 9000: tcp is not one of its protocols (http)"},
		{"fixed port, no protocols at all", lanwire.Need{Instance: "w", Module: "web", FixedPorts: lanwire.Ports{"tcp": 9000}}, nil, nil,
			"need w: fixed tcp port 9000: tcp is not one of its protocols (none)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := needProtocols(tt.need, tt.module)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("needProtocols = %v, %v; want %v", got, err, tt.want)
			}
			if len(tt.module) > 0 && len(got) > 0 && &got[0] == &tt.module[0] {
				t.Fatal("result shares the module's slice")
			}
		})
	}
}

// runAgent runs an agent without a LAN manager (the needs controller is
// not involved: these tests call what it calls) until the test ends.
func runAgent(t *testing.T, cfg config.Config) *Agent {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("children are /bin/sleep")
	}
	cfg.LanManagerAddress = ""
	a, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("Run ended before it was ready: %v", err)
	}
	return a
}

// freeBase is the first of n consecutive loopback ports free right now,
// below the ephemeral range.
func freeBase(t *testing.T, n int) int {
	t.Helper()
	for base := 21000; base+n < 32000; base += n {
		free := true
		for p := base; p < base+n && free; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				free = false
				continue
			}
			ln.Close()
		}
		if free {
			return base
		}
	}
	t.Fatalf("no %d free ports", n)
	return 0
}

// eventually polls cond for up to 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: not %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func needConfig(t *testing.T) (config.Config, int) {
	cfg := config.Default()
	base := freeBase(t, 15)
	cfg.PortRangeStart = config.PortRanges{TCP: uint16(base), HTTP: uint16(base + 5), WS: uint16(base + 10)}
	cfg.PortRangeSize = 5
	cfg.MaxProcesses = 7
	sleep := func(restart string) config.Module {
		return config.Module{Command: "/bin/sleep", Args: []string{"600"}, Protocols: []string{"tcp", "http"}, Readiness: "none", Restart: restart}
	}
	cfg.Modules = map[string]config.Module{"sleepy": sleep(""), "once": sleep("never")}
	return cfg, base
}

// TestStartNeed: a granted need's child runs the module as configured on
// this master with the need's protocols and fixed ports, under the need's
// name; it restarts always unless its module names a policy; needs this
// master cannot run are refused, as CheckNeed says beforehand.
func TestStartNeed(t *testing.T) {
	cfg, base := needConfig(t)
	a := runAgent(t, cfg)

	ports, err := a.StartNeed(lanwire.Need{Instance: "n1", Module: "sleepy", Protocols: []string{"http"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 1 || int(ports["http"]) < base+5 || int(ports["http"]) > base+9 {
		t.Errorf("n1's ports %v; want one http port in %d-%d", ports, base+5, base+9)
	}
	info, err := a.Get("n1")
	if err != nil || info.GetNeedId() != "n1" || info.GetSpec().GetRestart() != allexv1.RestartPolicy_RESTART_POLICY_ALWAYS ||
		!slices.Equal(info.GetSpec().GetProtocols(), []allexv1.Protocol{allexv1.Protocol_PROTOCOL_HTTP}) {
		t.Errorf("n1 = %v, %v; want need n1, restart always, http only", info, err)
	}

	fixed := base + 4
	ports, err = a.StartNeed(lanwire.Need{Instance: "n2", Module: "once", FixedPorts: lanwire.Ports{"tcp": uint16(fixed)}})
	if err != nil {
		t.Fatal(err)
	}
	if int(ports["tcp"]) != fixed || ports["http"] == 0 {
		t.Errorf("n2's ports %v; want tcp %d and an http port", ports, fixed)
	}
	if info, _ := a.Get("n2"); info.GetSpec().GetRestart() != allexv1.RestartPolicy_RESTART_POLICY_NEVER {
		t.Errorf("n2's restart %v; want its module's never", info.GetSpec().GetRestart())
	}

	for _, tt := range []struct {
		name string
		need lanwire.Need
		err  error
		msg  string
	}{
		{"unknown module", lanwire.Need{Instance: "u", Module: "ghost"}, ErrUnknownModule, `unknown module "ghost": not configured on this master`},
		{"undeclared protocol", lanwire.Need{Instance: "u", Module: "sleepy", Protocols: []string{"ws"}}, nil, "asks for protocol ws"},
		{"running already", lanwire.Need{Instance: "n1", Module: "sleepy"}, ErrExists, "n1"},
		{"fixed port taken", lanwire.Need{Instance: "u", Module: "sleepy", FixedPorts: lanwire.Ports{"tcp": uint16(fixed)}}, ErrExhausted, "instance u"},
	} {
		_, err := a.StartNeed(tt.need)
		if err == nil || (tt.err != nil && !errors.Is(err, tt.err)) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: StartNeed = %v; want %v with %q", tt.name, err, tt.err, tt.msg)
		}
		if _, gerr := a.Get("u"); gerr == nil {
			t.Fatalf("%s: a refused need left a process", tt.name)
		}
	}
	if err := a.CheckNeed(lanwire.Need{Instance: "x", Module: "ghost"}); !errors.Is(err, ErrUnknownModule) {
		t.Errorf("CheckNeed(unknown module) = %v", err)
	}
	if err := a.CheckNeed(lanwire.Need{Instance: "x", Module: "sleepy", Protocols: []string{"tcp"}}); err != nil {
		t.Errorf("CheckNeed(runnable) = %v", err)
	}
	if _, err := a.Get("x"); err == nil {
		t.Error("CheckNeed started a process")
	}
}

// TestNeedChildLife: Busy and Capacity follow a need child from start to
// StopNeed; the machine API refuses to stop or restart it behind the LAN
// manager's back unless forced.
func TestNeedChildLife(t *testing.T) {
	cfg, _ := needConfig(t)
	a := runAgent(t, cfg)
	if c := a.Capacity(); c.MaxProcesses != 7 || c.Running != 0 || c.FreePorts["tcp"] != 5 || c.FreePorts["http"] != 5 || c.FreePorts["ws"] != 5 {
		t.Fatalf("idle Capacity = %+v", c)
	}
	for _, inst := range []string{"n1", "n2"} {
		if _, err := a.StartNeed(lanwire.Need{Instance: inst, Module: "sleepy"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.StartProcess(&allexv1.ModuleSpec{Instance: "local", Module: "sleep", Command: "/bin/sleep", Args: []string{"600"}}); err != nil {
		t.Fatal(err)
	}
	if !a.Busy("n1") || !a.Busy("local") || a.Busy("nope") {
		t.Errorf("Busy n1 %v local %v nope %v; want true true false", a.Busy("n1"), a.Busy("local"), a.Busy("nope"))
	}
	if c := a.Capacity(); c.Running != 3 || c.FreePorts["tcp"] != 3 || c.FreePorts["http"] != 3 || c.FreePorts["ws"] != 5 {
		t.Errorf("Capacity with 3 children = %+v; want 3 running, 3 tcp and http ports free", c)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.StopProcess(ctx, "n1", true, false); !errors.Is(err, ErrNeedChild) || !strings.Contains(err.Error(), "allexctl needs rm n1") {
		t.Errorf("StopProcess(need child) = %v; want ErrNeedChild naming the way out", err)
	}
	if !a.Busy("n1") {
		t.Fatal("a refused stop stopped n1")
	}

	a.StopNeed("n1")
	eventually(t, "n1 gone after StopNeed", func() bool {
		_, err := a.Get("n1")
		return errors.Is(err, ErrNotFound) && !a.Busy("n1")
	})
	if c := a.Capacity(); c.Running != 2 || c.FreePorts["tcp"] != 4 || c.FreePorts["http"] != 4 {
		t.Errorf("Capacity after StopNeed = %+v; want 2 running, n1's ports back", c)
	}

	if _, err := a.StopProcess(ctx, "n2", false, true); err != nil {
		t.Fatalf("StopProcess(need child, force) = %v", err)
	}
	if a.Busy("n2") {
		t.Error("n2 busy after a forced stop")
	}
	if _, err := a.Restart(ctx, "n2"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "belongs to LAN need n2") {
		t.Errorf("Restart(stopped need child) = %v; want ErrInvalid: the LAN manager restarts it", err)
	}
	if a.Busy("n2") {
		t.Error("a refused restart started n2")
	}
	if c := a.Capacity(); c.Running != 1 {
		t.Errorf("Capacity.Running = %d with only local left", c.Running)
	}
}

// TestChildEvents: the controller hears of a need child's runs, readiness,
// exits and backoffs under the need's name with their details, and not of
// the supervisor's other events; the end of the child carries why.
func TestChildEvents(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	base := spawner.Event{Time: at, Instance: "copy-run", Module: "m", PID: 42, ExitCode: 3, Signal: "SIGTERM", Message: "why", Delay: time.Second}
	want := needs.ChildEvent{Instance: "n1", PID: 42, ExitCode: 3, Signal: "SIGTERM", Reason: "why", Delay: time.Second}
	for _, tt := range []struct {
		kind    spawner.EventKind
		ok      bool
		child   int
		started time.Time
	}{
		{spawner.EventRunning, true, needs.ChildRunning, at},
		{spawner.EventReady, true, needs.ChildReady, time.Time{}},
		{spawner.EventExited, true, needs.ChildExited, time.Time{}},
		{spawner.EventBackoff, true, needs.ChildBackoff, time.Time{}},
		{spawner.EventStarting, false, 0, time.Time{}},
		{spawner.EventStopping, false, 0, time.Time{}},
		{spawner.EventFailed, false, 0, time.Time{}},
	} {
		ev := base
		ev.Kind = tt.kind
		got, ok := childEvent("n1", ev)
		w := want
		w.Kind, w.StartedAt = tt.child, tt.started
		if !tt.ok {
			w = needs.ChildEvent{}
		}
		if ok != tt.ok || got != w {
			t.Errorf("event kind %v: %+v, %v; want %+v, %v", tt.kind, got, ok, w, tt.ok)
		}
	}
	if got := endedEvent("n1", nil); got != (needs.ChildEvent{Kind: needs.ChildEnded, Instance: "n1", Reason: "exited"}) {
		t.Errorf("clean end: %+v", got)
	}
	if got := endedEvent("n1", errors.New("crash loop: 5 restarts")); got.Kind != needs.ChildEnded || got.Reason != "crash loop: 5 restarts" {
		t.Errorf("failed end: %+v", got)
	}
}
