//go:build linux

package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/allex-go/allex/agent"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// TestStatusAndLookups: Status describes the agent behind the socket;
// lookups of an instance that does not exist say NotFound with its name.
func TestStatusAndLookups(t *testing.T) {
	m := startMachine(t, nil)
	st, err := m.c.Status(call(t), &allexv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetSocket() != m.socket || st.GetVersion() != "test-version" || int(st.GetPid()) != os.Getpid() ||
		st.GetProcesses() != 0 || st.GetLanLinkState() != "disabled" || len(st.GetPortRanges()) != 3 {
		t.Errorf("Status = %v", st)
	}
	for _, r := range st.GetPortRanges() {
		if r.GetProtocol() == allexv1.Protocol_PROTOCOL_TCP && (int(r.GetRangeStart()) != m.tcp || int(r.GetRangeEnd()) != m.tcp+9) {
			t.Errorf("tcp range %d-%d, want %d-%d", r.GetRangeStart(), r.GetRangeEnd(), m.tcp, m.tcp+9)
		}
	}
	list, err := m.c.ListProcesses(call(t), &allexv1.ListProcessesRequest{})
	if err != nil || len(list.GetProcesses()) != 0 {
		t.Errorf("ListProcesses = %v, %v; want none", list, err)
	}
	_, err = m.c.GetProcess(call(t), &allexv1.GetProcessRequest{Instance: "nope"})
	wantCode(t, "GetProcess(nope)", err, codes.NotFound, "no such process: nope")
	_, err = m.c.GetPorts(call(t), &allexv1.GetPortsRequest{Instance: "nope"})
	wantCode(t, "GetPorts(nope)", err, codes.NotFound, "nope")
	_, err = m.c.StopProcess(call(t), &allexv1.StopProcessRequest{Instance: "nope"})
	wantCode(t, "StopProcess(nope)", err, codes.NotFound, "nope")
	_, err = m.c.RestartProcess(call(t), &allexv1.RestartProcessRequest{Instance: "nope"})
	wantCode(t, "RestartProcess(nope)", err, codes.NotFound, "nope")
	_, _, err = m.logs(t, call(t), &allexv1.LogsRequest{Instance: "nope"})
	wantCode(t, "Logs(nope)", err, codes.NotFound, "nope")
}

// TestStartStopRestart: a started child is listed and runs; bad starts
// are refused with InvalidArgument or AlreadyExists and start nothing;
// restart gives it a new pid; stop leaves it exited, stop -rm forgets it.
func TestStartStopRestart(t *testing.T) {
	m := startMachine(t, nil)
	info := m.start(t, sleeper("s1"))
	if info.GetInstance() != "s1" || info.GetModule() != "sleep" {
		t.Fatalf("StartProcess = %v", info)
	}
	first := m.waitFor(t, "s1", func(p *allexv1.ProcessInfo) error {
		if p.GetPid() == 0 {
			return errors.New("no pid yet")
		}
		return nil
	}).GetPid()

	for _, tt := range []struct {
		name string
		req  *allexv1.StartProcessRequest
		code codes.Code
		msg  string
	}{
		{"no spec", &allexv1.StartProcessRequest{}, codes.InvalidArgument, "spec is required"},
		{"duplicate", &allexv1.StartProcessRequest{Spec: sleeper("s1")}, codes.AlreadyExists, "s1"},
		{"bad instance name", &allexv1.StartProcessRequest{Spec: sleeper("a b")}, codes.InvalidArgument, `instance "a b"`},
		{"unknown module", &allexv1.StartProcessRequest{Spec: &allexv1.ModuleSpec{Instance: "u1", Module: "ghost"}}, codes.InvalidArgument, `unknown module "ghost"`},
		{"protocol twice", &allexv1.StartProcessRequest{Spec: &allexv1.ModuleSpec{Instance: "p1", Module: "sleep", Command: "/bin/sleep", Args: []string{"600"},
			Protocols: []allexv1.Protocol{allexv1.Protocol_PROTOCOL_TCP, allexv1.Protocol_PROTOCOL_TCP}}}, codes.InvalidArgument, "listed twice"},
	} {
		_, err := m.c.StartProcess(call(t), tt.req)
		wantCode(t, tt.name, err, tt.code, tt.msg)
	}
	list, err := m.c.ListProcesses(call(t), &allexv1.ListProcessesRequest{})
	if err != nil || len(list.GetProcesses()) != 1 || list.GetProcesses()[0].GetPid() != first {
		t.Fatalf("after refused starts, ListProcesses = %v, %v; want s1 alone, pid %d", list, err, first)
	}

	if _, err := m.c.RestartProcess(call(t), &allexv1.RestartProcessRequest{Instance: "s1"}); err != nil {
		t.Fatalf("RestartProcess: %v", err)
	}
	m.waitFor(t, "s1", func(p *allexv1.ProcessInfo) error {
		if p.GetPid() == 0 || p.GetPid() == first {
			return fmt.Errorf("pid %d, want a new one (was %d)", p.GetPid(), first)
		}
		return nil
	})

	stopped, err := m.c.StopProcess(call(t), &allexv1.StopProcessRequest{Instance: "s1"})
	if err != nil || stopped.GetProcess().GetState() != allexv1.ProcessState_PROCESS_STATE_EXITED {
		t.Fatalf("StopProcess = %v, %v; want exited", stopped, err)
	}
	if _, err := m.c.GetProcess(call(t), &allexv1.GetProcessRequest{Instance: "s1"}); err != nil {
		t.Fatalf("a stopped process is forgotten without -rm: %v", err)
	}
	if _, err := m.c.StopProcess(call(t), &allexv1.StopProcessRequest{Instance: "s1", Remove: true}); err != nil {
		t.Fatalf("StopProcess -rm: %v", err)
	}
	_, err = m.c.GetProcess(call(t), &allexv1.GetProcessRequest{Instance: "s1"})
	wantCode(t, "GetProcess after stop -rm", err, codes.NotFound, "s1")
}

// TestWatchEvents: a watcher of one instance sees its life in order,
// starting to exited, and nothing of other instances.
func TestWatchEvents(t *testing.T) {
	m := startMachine(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := m.c.WatchEvents(ctx, &allexv1.WatchEventsRequest{Instance: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan *allexv1.Event, 256)
	go func() {
		defer close(events)
		for {
			msg, err := st.Recv()
			if err != nil {
				return
			}
			events <- msg.GetEvent()
		}
	}()
	// The server subscribes after the call returns: cycle w1 until the
	// watcher sees it, then watch one whole life.
	life := func() {
		m.start(t, sleeper("other"))
		m.start(t, sleeper("w1"))
		for _, inst := range []string{"w1", "other"} {
			if _, err := m.c.StopProcess(call(t), &allexv1.StopProcessRequest{Instance: inst, Remove: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for attempt := 0; len(events) == 0; attempt++ {
		if attempt == 20 {
			t.Fatal("the watcher saw nothing of 20 lives of w1")
		}
		life()
	}
	// Drain what the sync lives left; their last event is REMOVED.
	for drained := false; !drained; {
		select {
		case <-events:
		case <-time.After(200 * time.Millisecond):
			drained = true
		}
	}
	life()
	var kinds []allexv1.EventKind
	for ev := range events {
		if ev.GetInstance() != "w1" {
			t.Fatalf("a watcher of w1 got %v", ev)
		}
		kinds = append(kinds, ev.GetKind())
		if ev.GetKind() == allexv1.EventKind_EVENT_KIND_REMOVED {
			break
		}
	}
	want := []allexv1.EventKind{allexv1.EventKind_EVENT_KIND_STARTING, allexv1.EventKind_EVENT_KIND_RUNNING}
	tail := []allexv1.EventKind{allexv1.EventKind_EVENT_KIND_STOPPING, allexv1.EventKind_EVENT_KIND_EXITED, allexv1.EventKind_EVENT_KIND_REMOVED}
	if len(kinds) < 5 || !slices.Equal(kinds[:2], want) || !slices.Equal(kinds[len(kinds)-3:], tail) {
		t.Errorf("events of w1: %v; want %v ... %v", kinds, want, tail)
	}
}

// TestChildCalls: a child calling the socket is known by its kernel
// credentials: lies about its pid or instance are refused, an honest
// registration, an extra port and sdk readiness are granted, and the
// same calls from a process that is no child are refused.
func TestChildCalls(t *testing.T) {
	m := startMachine(t, nil)
	m.start(t, helper("liar", "lie"))
	m.start(t, helper("alloc", "alloc", allexv1.Protocol_PROTOCOL_TCP))
	sdk := helper("sdk", "sdk")
	sdk.Readiness = allexv1.Readiness_READINESS_SDK
	m.start(t, sdk)
	m.waitLog(t, "liar", "lie: PermissionDenied\nother instance: PermissionDenied\nhonest: OK\n")
	m.waitFor(t, "liar", func(p *allexv1.ProcessInfo) error {
		if !p.GetRegistered() {
			return errors.New("not registered")
		}
		return nil
	})
	m.waitFor(t, "sdk", inState(allexv1.ProcessState_PROCESS_STATE_READY))
	m.waitLog(t, "sdk", "ready: OK\n")

	out := m.waitLog(t, "alloc", " OK\n")
	var extra uint32
	if _, err := fmt.Sscanf(out[strings.Index(out, "extra port:"):], "extra port: %d OK", &extra); err != nil || int(extra) < m.tcp || int(extra) > m.tcp+9 {
		t.Fatalf("alloc child said %q; want an extra port in %d-%d", out, m.tcp, m.tcp+9)
	}
	resp, err := m.c.GetPorts(call(t), &allexv1.GetPortsRequest{Module: "helper"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range resp.GetInstances() {
		for _, p := range in.GetPorts() {
			got = append(got, fmt.Sprintf("%s %d %v", in.GetInstance(), p.GetPort(), p.GetExtra()))
		}
	}
	if !slices.Contains(got, fmt.Sprintf("alloc %d true", extra)) || len(resp.GetInstances()) != 3 {
		t.Errorf("GetPorts(module helper) = %v; want 3 instances, alloc holding extra port %d", got, extra)
	}

	// This test process is no child of the agent.
	notChild := "was not spawned by this master"
	_, err = m.c.Register(call(t), &allexv1.RegisterRequest{Instance: "liar"})
	wantCode(t, "Register from a stranger", err, codes.PermissionDenied, notChild)
	_, err = m.c.Register(call(t), &allexv1.RegisterRequest{Pid: 1})
	wantCode(t, "Register claiming pid 1", err, codes.PermissionDenied, "caller claims pid 1")
	_, err = m.c.ReportReady(call(t), &allexv1.ReportReadyRequest{})
	wantCode(t, "ReportReady from a stranger", err, codes.PermissionDenied, notChild)
	_, err = m.c.ReportLifecycle(call(t), &allexv1.ReportLifecycleRequest{Kind: "k", Message: "m"})
	wantCode(t, "ReportLifecycle from a stranger", err, codes.PermissionDenied, notChild)
	_, err = m.c.ReportLifecycle(call(t), &allexv1.ReportLifecycleRequest{Kind: strings.Repeat("k", 65)})
	wantCode(t, "ReportLifecycle with a long kind", err, codes.InvalidArgument, "too long")
	_, err = m.c.AllocatePort(call(t), &allexv1.AllocatePortRequest{Protocol: allexv1.Protocol_PROTOCOL_TCP})
	wantCode(t, "AllocatePort from a stranger", err, codes.PermissionDenied, notChild)
	_, err = m.c.AllocatePort(call(t), &allexv1.AllocatePortRequest{})
	wantCode(t, "AllocatePort without a protocol", err, codes.InvalidArgument, "unknown protocol")
	_, err = m.c.ReleasePort(call(t), &allexv1.ReleasePortRequest{Protocol: allexv1.Protocol_PROTOCOL_TCP, Port: extra})
	wantCode(t, "ReleasePort from a stranger", err, codes.PermissionDenied, notChild)
	_, err = m.c.GetPorts(call(t), &allexv1.GetPortsRequest{})
	wantCode(t, "GetPorts of itself from a stranger", err, codes.PermissionDenied, "name an instance or module")
	if again, err := m.c.GetPorts(call(t), &allexv1.GetPortsRequest{Instance: "alloc"}); err != nil || len(again.GetInstances()[0].GetPorts()) != 2 {
		t.Errorf("alloc's ports after a stranger's release: %v, %v; want its own and the extra", again, err)
	}
}

// waitLog polls the instance's stdout until it contains want, and
// returns it.
func (m *machine) waitLog(t *testing.T, instance, want string) string {
	t.Helper()
	var out string
	e2e.Eventually(t, 30*time.Second, func() error {
		var err error
		out, _, err = m.logs(t, call(t), &allexv1.LogsRequest{Instance: instance})
		if err != nil {
			return err
		}
		if !strings.Contains(out, want) {
			return fmt.Errorf("%s wrote %q, want %q in it", instance, out, want)
		}
		return nil
	})
	return out
}

// TestCallerWithoutPeerCredentials: calls that act for "the calling
// child" are refused when the kernel does not say who calls.
func TestCallerWithoutPeerCredentials(t *testing.T) {
	s := New(nil, nil)
	ctx := context.Background()
	_, err := s.Register(ctx, &allexv1.RegisterRequest{})
	wantCode(t, "Register", err, codes.PermissionDenied, "caller cannot be identified")
	_, err = s.ReportReady(ctx, &allexv1.ReportReadyRequest{})
	wantCode(t, "ReportReady", err, codes.PermissionDenied, "caller cannot be identified")
	_, err = s.ReportLifecycle(ctx, &allexv1.ReportLifecycleRequest{})
	wantCode(t, "ReportLifecycle", err, codes.PermissionDenied, "caller cannot be identified")
	_, err = s.AllocatePort(ctx, &allexv1.AllocatePortRequest{})
	wantCode(t, "AllocatePort", err, codes.PermissionDenied, "caller cannot be identified")
	_, err = s.ReleasePort(ctx, &allexv1.ReleasePortRequest{})
	wantCode(t, "ReleasePort", err, codes.PermissionDenied, "caller cannot be identified")
}

// TestErrorCodes: each agent error reaches clients as its own code, its
// message intact.
func TestErrorCodes(t *testing.T) {
	for _, tt := range []struct {
		err  error
		code codes.Code
	}{
		{agent.ErrNotFound, codes.NotFound},
		{agent.ErrExists, codes.AlreadyExists},
		{agent.ErrInvalid, codes.InvalidArgument},
		{agent.ErrUnknownModule, codes.InvalidArgument},
		{agent.ErrPermission, codes.PermissionDenied},
		{agent.ErrExhausted, codes.ResourceExhausted},
		{agent.ErrNotRunning, codes.Unavailable},
		{agent.ErrNeedChild, codes.FailedPrecondition},
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("disk on fire"), codes.Internal},
	} {
		wrapped := fmt.Errorf("doing x: %w", tt.err)
		wantCode(t, tt.err.Error(), toStatus(wrapped), tt.code, wrapped.Error())
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) is an error")
	}
}

// startLine is the line the master writes to a child's logs at each start.
var startLine = regexp.MustCompile(`--- allex: start pid \d+ at \S+ ---`)

// TestLogs: Logs returns what a child wrote, per stream, its last N lines
// with TailLines, and with Follow what it writes later, ending with it.
func TestLogs(t *testing.T) {
	m := startMachine(t, nil)
	gate := filepath.Join(t.TempDir(), "gate")
	m.start(t, &allexv1.ModuleSpec{Instance: "talk", Module: "sh", Command: "/bin/sh", Restart: allexv1.RestartPolicy_RESTART_POLICY_NEVER,
		Args: []string{"-c", `printf 'o1\no2\no3\n'; printf 'e1\ne2\n' >&2; while [ ! -e "$GATE" ]; do sleep 0.02; done; echo o4`},
		Env:  map[string]string{"GATE": gate}})
	m.waitLog(t, "talk", "o3\n")
	for _, tt := range []struct {
		name         string
		req          *allexv1.LogsRequest
		stdout, errs string
	}{
		{"both", &allexv1.LogsRequest{}, "[start]\no1\no2\no3\n", "[start]\ne1\ne2\n"},
		{"-n 1", &allexv1.LogsRequest{TailLines: 1}, "o3\n", "e2\n"},
		{"-n 100", &allexv1.LogsRequest{TailLines: 100}, "[start]\no1\no2\no3\n", "[start]\ne1\ne2\n"},
		{"stderr", &allexv1.LogsRequest{Stream: allexv1.LogStream_LOG_STREAM_STDERR}, "", "[start]\ne1\ne2\n"},
		{"stdout -n 2", &allexv1.LogsRequest{Stream: allexv1.LogStream_LOG_STREAM_STDOUT, TailLines: 2}, "o2\no3\n", ""},
	} {
		tt.req.Instance = "talk"
		out, errs, err := m.logs(t, call(t), tt.req)
		out, errs = startLine.ReplaceAllString(out, "[start]"), startLine.ReplaceAllString(errs, "[start]")
		if err != nil || out != tt.stdout || errs != tt.errs {
			t.Errorf("%s: %q %q %v; want %q %q", tt.name, out, errs, err, tt.stdout, tt.errs)
		}
	}

	// Follow: the stream carries the line written after the call and ends
	// when the child does.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := m.c.Logs(ctx, &allexv1.LogsRequest{Instance: "talk", Stream: allexv1.LogStream_LOG_STREAM_STDOUT, TailLines: 1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for !strings.Contains(got.String(), "o3\n") {
		msg, err := st.Recv()
		if err != nil {
			t.Fatalf("follow before the gate: %v after %q", err, got.String())
		}
		got.Write(msg.GetData())
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := st.Recv()
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("follow did not end with the child: %q", got.String())
			}
			break
		}
		got.Write(msg.GetData())
	}
	if got.String() != "o3\no4\n" {
		t.Errorf("follow -n 1 got %q, want %q", got.String(), "o3\no4\n")
	}
}

// TestMachineSocketOwner: a second Listen on a served socket is refused
// and leaves the server answering; a stale socket file is replaced; a
// file that is no socket is kept and refused; a stopped server leaves the
// path free for the next.
func TestMachineSocketOwner(t *testing.T) {
	m := startMachine(t, nil)
	if _, err := Listen(m.socket, ""); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen on a served socket: %v, want ErrInUse", err)
	}
	if _, err := m.c.Status(call(t), &allexv1.StatusRequest{}); err != nil {
		t.Fatalf("the first server stopped answering: %v", err)
	}

	dir := e2e.ShortDir(t)
	path := filepath.Join(dir, "stale.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := Listen(path, "")
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- New(nil, nil).Serve(ctx, ln) }()
	conn := healthpb.NewHealthClient(dialConn(t, path))
	if r, err := conn.Check(call(t), &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over the replaced socket: %v, %v", r, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after the server stopped: %v", err)
	}
	again, err := Listen(path, "")
	if err != nil {
		t.Fatalf("Listen after the server stopped: %v", err)
	}
	again.Close()

	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(plain, ""); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, err := os.ReadFile(plain); err != nil || string(b) != "keep me" {
		t.Errorf("the regular file was touched: %q %v", b, err)
	}
}
