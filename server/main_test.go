//go:build linux

package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/allex-go/allex/agent"
	"github.com/allex-go/allex/agent/config"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// TestMain lets the test binary be a child of the agent under test (see
// e2e.HelperMain): children that call the machine socket must be real
// processes the kernel names as the agent's.
func TestMain(m *testing.M) {
	if os.Getenv("ALLEX_TEST_HELPER") != "" {
		os.Exit(e2e.HelperMain())
	}
	os.Exit(m.Run())
}

// machine is a real agent served on a unix socket in a temp dir.
type machine struct {
	socket string
	tcp    int // first port of the tcp range; ranges are 10 ports each
	c      allexv1.MachineManagerClient
}

// startMachine runs an agent (children forked by it, no LAN manager) and
// a Server on a fresh socket; both stop at cleanup.
func startMachine(t *testing.T, modules map[string]config.Module) *machine {
	t.Helper()
	dir := e2e.ShortDir(t)
	cfg := config.Default()
	cfg.LanManagerAddress = ""
	base := e2e.FreeBlock(t, 30)
	cfg.PortRangeStart = config.PortRanges{TCP: uint16(base), HTTP: uint16(base + 10), WS: uint16(base + 20)}
	cfg.PortRangeSize = 10
	cfg.Modules = modules
	sock := filepath.Join(dir, "m.sock")
	a, err := agent.New(agent.Options{Config: cfg, Socket: sock, LogDir: filepath.Join(dir, "logs"), Version: "test-version"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-runDone:
		t.Fatalf("agent ended before it was ready: %v", err)
	}
	ln, err := Listen(sock, "")
	if err != nil {
		cancel()
		<-runDone
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- New(a, nil).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-serveDone; err != nil {
			t.Errorf("Serve: %v", err)
		}
		<-runDone
		ln.Close()
	})
	return &machine{socket: sock, tcp: base, c: dial(t, sock)}
}

func dial(t *testing.T, sock string) allexv1.MachineManagerClient {
	t.Helper()
	return allexv1.NewMachineManagerClient(dialConn(t, sock))
}

func dialConn(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// call bounds one RPC.
func call(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails unless err is a gRPC status with code and a message
// containing msg.
func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s: %v, want %s with %q", what, err, code, msg)
	}
}

// start starts a command child and returns its info.
func (m *machine) start(t *testing.T, spec *allexv1.ModuleSpec) *allexv1.ProcessInfo {
	t.Helper()
	resp, err := m.c.StartProcess(call(t), &allexv1.StartProcessRequest{Spec: spec})
	if err != nil {
		t.Fatalf("start %s: %v", spec.GetInstance(), err)
	}
	return resp.GetProcess()
}

// sleeper is a spec of /bin/sleep under instance.
func sleeper(instance string) *allexv1.ModuleSpec {
	return &allexv1.ModuleSpec{Instance: instance, Module: "sleep", Command: "/bin/sleep", Args: []string{"600"}}
}

// helper is a spec running the test binary as e2e.HelperMain's mode.
func helper(instance, mode string, protocols ...allexv1.Protocol) *allexv1.ModuleSpec {
	return &allexv1.ModuleSpec{Instance: instance, Module: "helper", Command: os.Args[0],
		Env: map[string]string{"ALLEX_TEST_HELPER": mode}, Protocols: protocols,
		Readiness: allexv1.Readiness_READINESS_NONE}
}

// waitFor polls GetProcess until ok holds.
func (m *machine) waitFor(t *testing.T, instance string, ok func(*allexv1.ProcessInfo) error) *allexv1.ProcessInfo {
	t.Helper()
	var info *allexv1.ProcessInfo
	e2e.Eventually(t, 30*time.Second, func() error {
		resp, err := m.c.GetProcess(call(t), &allexv1.GetProcessRequest{Instance: instance})
		if err != nil {
			return err
		}
		info = resp.GetProcess()
		return ok(info)
	})
	return info
}

func inState(want allexv1.ProcessState) func(*allexv1.ProcessInfo) error {
	return func(p *allexv1.ProcessInfo) error {
		if p.GetState() != want {
			return fmt.Errorf("%s is %s, want %s", p.GetInstance(), p.GetState(), want)
		}
		return nil
	}
}

// logs reads a whole Logs stream into stdout and stderr text.
func (m *machine) logs(t *testing.T, ctx context.Context, req *allexv1.LogsRequest) (string, string, error) {
	t.Helper()
	st, err := m.c.Logs(ctx, req)
	if err != nil {
		return "", "", err
	}
	var out, errOut strings.Builder
	for {
		msg, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return out.String(), errOut.String(), err
		}
		switch msg.GetStream() {
		case allexv1.LogStream_LOG_STREAM_STDOUT:
			out.Write(msg.GetData())
		case allexv1.LogStream_LOG_STREAM_STDERR:
			errOut.Write(msg.GetData())
		default:
			t.Fatalf("chunk of stream %v", msg.GetStream())
		}
	}
}
