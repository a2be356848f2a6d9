package child_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/allex-go/allex/child"
	"github.com/allex-go/allex/child/mastertest"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// waitTimeout is generous: the suite runs on a loaded 2-core machine.
const waitTimeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// socketDir is short enough for unix socket paths, unlike t.TempDir().
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ax")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// peerPID is what mastertest reports as the caller of pid: it only knows
// peer credentials on Linux.
func peerPID(pid int) int {
	if runtime.GOOS != "linux" {
		return 0
	}
	return pid
}

func processSocketPath(dir string) string {
	return filepath.Join(dir, "allexprocess."+strconv.Itoa(os.Getpid()))
}

type fixture struct {
	master *mastertest.Master
	dir    string
	child  *child.Child
}

// newChild builds a Child with the given ports talking to a fresh in-test
// master; edit adjusts the options before New.
func newChild(t *testing.T, ports map[string]uint16, edit func(*child.Options)) *fixture {
	t.Helper()
	m := mastertest.New(t)
	dir := socketDir(t)
	opts := child.DefaultOptions()
	opts.SocketDir = dir
	opts.Env = &child.Env{Module: "echo", Instance: "echo1", Ports: ports, MasterSocket: m.Path}
	if edit != nil {
		edit(&opts)
	}
	c, err := child.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &fixture{master: m, dir: dir, child: c}
}

func TestStartRegisters(t *testing.T) {
	f := newChild(t, nil, nil)
	if err := f.child.Start(testContext(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	want := processSocketPath(f.dir)
	if got := f.child.SocketPath(); got != want {
		t.Errorf("SocketPath = %q, want %q", got, want)
	}
	regs := f.master.Registrations()
	if len(regs) != 1 {
		t.Fatalf("got %d registrations, want 1", len(regs))
	}
	wantReg := &allexv1.RegisterRequest{Instance: "echo1", Pid: int32(os.Getpid()), ProcessSocket: want}
	if !proto.Equal(regs[0], wantReg) {
		t.Errorf("Register = %v, want %v", regs[0], wantReg)
	}
	if got, want := f.master.RegisterPeerPIDs(), []int{peerPID(os.Getpid())}; !slices.Equal(got, want) {
		t.Errorf("Register peer pids = %v, want %v", got, want)
	}
	fi, err := os.Stat(want)
	if err != nil {
		t.Fatalf("process socket: %v", err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("process socket mode = %v, want a socket with 0660", fi.Mode())
	}
	if err := f.child.Start(testContext(t)); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Start: error = %v, want one saying twice", err)
	}
}

func TestProcessService(t *testing.T) {
	ports := map[string]uint16{"tcp": 15000, "http": 16000}
	f := newChild(t, ports, nil)
	ctx := testContext(t)
	before := time.Now()
	if err := f.child.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pc := mastertest.DialProcess(t, processSocketPath(f.dir))

	info, err := pc.Info(ctx, &allexv1.InfoRequest{})
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	wantInfo := &allexv1.InfoResponse{
		Module: "echo", Instance: "echo1", Pid: int32(os.Getpid()),
		Ports: []*allexv1.PortAssignment{
			{Protocol: allexv1.Protocol_PROTOCOL_HTTP, Port: 16000},
			{Protocol: allexv1.Protocol_PROTOCOL_TCP, Port: 15000},
		},
		StartedAt: info.GetStartedAt(),
	}
	if !proto.Equal(info, wantInfo) {
		t.Errorf("Info = %v, want %v", info, wantInfo)
	}
	if st := info.GetStartedAt().AsTime(); st.IsZero() || st.After(before.Add(time.Second)) {
		t.Errorf("Info.StartedAt = %v, want the time New ran (before %v)", st, before)
	}

	healthTests := []struct {
		set  bool
		ok   bool
		msg  string
		want *allexv1.HealthResponse
	}{
		{want: &allexv1.HealthResponse{Healthy: true}},
		{set: true, ok: false, msg: "db down", want: &allexv1.HealthResponse{Healthy: false, Message: "db down"}},
		{set: true, ok: true, msg: "", want: &allexv1.HealthResponse{Healthy: true}},
	}
	for i, tt := range healthTests {
		if tt.set {
			f.child.SetHealthy(tt.ok, tt.msg)
		}
		got, err := pc.Health(ctx, &allexv1.HealthRequest{})
		if err != nil {
			t.Fatalf("Health %d: %v", i, err)
		}
		if !proto.Equal(got, tt.want) {
			t.Errorf("Health %d = %v, want %v", i, got, tt.want)
		}
	}

	select {
	case <-f.child.ShutdownRequested():
		t.Fatal("shutdown requested before any Shutdown call")
	default:
	}
	badGrace := []*durationpb.Duration{{Seconds: -1}, {Seconds: 1, Nanos: -5}}
	for _, g := range badGrace {
		_, err := pc.Shutdown(ctx, &allexv1.ShutdownRequest{Grace: g})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Shutdown(grace %v): error = %v, want InvalidArgument", g, err)
		}
	}
	if _, err := pc.Shutdown(ctx, &allexv1.ShutdownRequest{Grace: durationpb.New(3 * time.Second)}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case <-f.child.ShutdownRequested():
	case <-ctx.Done():
		t.Fatal("ShutdownRequested not closed after Shutdown")
	}
	if g := f.child.ShutdownGrace(); g != 3*time.Second {
		t.Errorf("ShutdownGrace = %v, want 3s", g)
	}
	// A second request may shorten the grace but not lengthen it.
	for _, tt := range []struct{ send, want time.Duration }{{10 * time.Second, 3 * time.Second}, {time.Second, time.Second}} {
		if _, err := pc.Shutdown(ctx, &allexv1.ShutdownRequest{Grace: durationpb.New(tt.send)}); err != nil {
			t.Fatalf("Shutdown again: %v", err)
		}
		if g := f.child.ShutdownGrace(); g != tt.want {
			t.Errorf("after Shutdown(%v): ShutdownGrace = %v, want %v", tt.send, g, tt.want)
		}
	}
}

func TestStartSocketPathStates(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr string // empty: Start must succeed
	}{
		{
			name: "stale socket is replaced",
			prepare: func(t *testing.T, path string) {
				ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				ln.SetUnlinkOnClose(false)
				if err := ln.Close(); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(path); err != nil {
					t.Fatalf("stale socket not left behind: %v", err)
				}
			},
		},
		{
			name: "live socket is refused",
			prepare: func(t *testing.T, path string) {
				ln, err := net.Listen("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = ln.Close() })
				go func() {
					for range 100 {
						conn, err := ln.Accept()
						if err != nil {
							return
						}
						_ = conn.Close()
					}
				}()
			},
			wantErr: "in use by a live process",
		},
		{
			name: "regular file is refused",
			prepare: func(t *testing.T, path string) {
				if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: "is not a socket",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newChild(t, nil, nil)
			path := processSocketPath(f.dir)
			tt.prepare(t, path)
			ctx := testContext(t)
			err := f.child.Start(ctx)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Start error = %v, want one containing %q", err, tt.wantErr)
				}
				if _, serr := os.Stat(path); serr != nil {
					t.Errorf("Start removed what it refused to replace: %v", serr)
				}
				if n := len(f.master.Registrations()); n != 0 {
					t.Errorf("registered %d times after refusing the socket", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			info, err := mastertest.DialProcess(t, path).Info(ctx, &allexv1.InfoRequest{})
			if err != nil {
				t.Fatalf("Info over the replaced socket: %v", err)
			}
			if info.GetPid() != int32(os.Getpid()) {
				t.Errorf("Info pid = %d, want %d", info.GetPid(), os.Getpid())
			}
		})
	}
}

func TestStartSocketPathTooLong(t *testing.T) {
	dir := filepath.Join(socketDir(t), strings.Repeat("d", 100))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	opts := child.DefaultOptions()
	opts.SocketDir = dir
	opts.Env = &child.Env{Module: "echo", Instance: "echo1", MasterSocket: mastertest.New(t).Path}
	c, err := child.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(testContext(t)); err == nil || !strings.Contains(err.Error(), "unix socket paths must be shorter") {
		t.Fatalf("Start error = %v, want one about the path length", err)
	}
}

func TestListenAutoReady(t *testing.T) {
	tests := []struct {
		name         string
		autoReady    bool
		beforeStart  int // how many protocols are listened on before Start
		wantReadies  int
		wantNoListen bool
	}{
		{name: "all after start", autoReady: true, wantReadies: 1},
		{name: "one before start", autoReady: true, beforeStart: 1, wantReadies: 1},
		{name: "all before start", autoReady: true, beforeStart: 3, wantReadies: 1},
		{name: "auto ready off", autoReady: false, wantReadies: 0},
	}
	protos := []string{"tcp", "http", "ws"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			free := mastertest.FreePorts(t, 3)
			ports := map[string]uint16{"tcp": free[0], "http": free[1], "ws": free[2]}
			f := newChild(t, ports, func(o *child.Options) { o.AutoReady = tt.autoReady })
			ctx := testContext(t)
			for i, p := range protos {
				if i == tt.beforeStart {
					if err := f.child.Start(ctx); err != nil {
						t.Fatalf("Start: %v", err)
					}
				}
				if i < len(protos)-1 && f.master.Readies() != 0 {
					t.Fatalf("ready reported before every protocol was listened on (after %d)", i)
				}
				ln, err := f.child.Listen(p)
				if err != nil {
					t.Fatalf("Listen(%s): %v", p, err)
				}
				t.Cleanup(func() { _ = ln.Close() })
				// The listener is real and on the assigned port.
				if got := ln.Addr().(*net.TCPAddr).Port; got != int(ports[p]) {
					t.Errorf("Listen(%s) on port %d, want %d", p, got, ports[p])
				}
				conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[p]))))
				if err != nil {
					t.Fatalf("dial %s listener: %v", p, err)
				}
				_ = conn.Close()
			}
			if tt.beforeStart == len(protos) {
				if err := f.child.Start(ctx); err != nil {
					t.Fatalf("Start: %v", err)
				}
			}
			if got := f.master.Readies(); got != tt.wantReadies {
				t.Fatalf("ReportReady calls = %d, want %d", got, tt.wantReadies)
			}
			if err := f.child.Ready(ctx); err != nil {
				t.Fatalf("Ready: %v", err)
			}
			if got := f.master.Readies(); got != tt.wantReadies+1 {
				t.Fatalf("after explicit Ready: ReportReady calls = %d, want %d", got, tt.wantReadies+1)
			}
		})
	}
}

func TestNoPortsAutoReadyOnStart(t *testing.T) {
	f := newChild(t, nil, nil)
	if err := f.child.Start(testContext(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if got := f.master.Readies(); got != 1 {
		t.Fatalf("ReportReady calls = %d, want 1 for a child without ports", got)
	}
}

func TestListenErrors(t *testing.T) {
	free := mastertest.FreePort(t)
	f := newChild(t, map[string]uint16{"http": free}, nil)
	if err := f.child.Start(testContext(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	// Something else holds the http port.
	hog, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(int(free))))
	if err != nil {
		t.Fatal(err)
	}
	defer hog.Close()
	tests := []struct{ proto, wantErr string }{
		{"udp", `unknown protocol "udp"`},
		{"", `unknown protocol ""`},
		{"tcp", "no tcp port assigned"},
		{"http", fmt.Sprintf("listen on http port %d", free)},
	}
	for _, tt := range tests {
		ln, err := f.child.Listen(tt.proto)
		if err == nil {
			_ = ln.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Listen(%q) error = %v, want one containing %q", tt.proto, err, tt.wantErr)
		}
	}
	if got := f.master.Readies(); got != 0 {
		t.Errorf("ReportReady calls = %d after failed listens, want 0", got)
	}
	if got := f.child.Port("http"); got != free {
		t.Errorf("Port(http) = %d, want %d", got, free)
	}
	if got := f.child.Port("tcp"); got != 0 {
		t.Errorf("Port(tcp) = %d, want 0", got)
	}
	ports := f.child.Ports()
	ports["http"] = 1
	if f.child.Port("http") != free {
		t.Error("Ports returned the child's own map")
	}
}

func TestPassThrough(t *testing.T) {
	f := newChild(t, nil, nil)
	ctx := testContext(t)
	if err := f.child.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	others := []*allexv1.InstancePorts{
		{Instance: "db1", Module: "db", Ports: []*allexv1.PortAssignment{{Protocol: allexv1.Protocol_PROTOCOL_TCP, Port: 15001}}},
		{Instance: "db2", Module: "db", Ports: []*allexv1.PortAssignment{{Protocol: allexv1.Protocol_PROTOCOL_TCP, Port: 15002}}},
		{Instance: "web1", Module: "web", Ports: []*allexv1.PortAssignment{{Protocol: allexv1.Protocol_PROTOCOL_HTTP, Port: 16001}}},
	}
	f.master.SetInstances(others)

	t.Run("allocate and release", func(t *testing.T) {
		tests := []struct {
			proto string
			want  allexv1.Protocol
		}{
			{"tcp", allexv1.Protocol_PROTOCOL_TCP},
			{"http", allexv1.Protocol_PROTOCOL_HTTP},
			{"ws", allexv1.Protocol_PROTOCOL_WS},
		}
		for i, tt := range tests {
			port, err := f.child.AllocatePort(ctx, tt.proto)
			if err != nil {
				t.Fatalf("AllocatePort(%s): %v", tt.proto, err)
			}
			if want := uint16(40000 + i); port != want {
				t.Errorf("AllocatePort(%s) = %d, want %d", tt.proto, port, want)
			}
			if got := f.master.Allocated()[i].GetProtocol(); got != tt.want {
				t.Errorf("master saw protocol %v, want %v", got, tt.want)
			}
			if err := f.child.ReleasePort(ctx, tt.proto, port); err != nil {
				t.Fatalf("ReleasePort: %v", err)
			}
			rel := f.master.Released()[i]
			if rel.GetProtocol() != tt.want || rel.GetPort() != uint32(port) {
				t.Errorf("master saw release %v, want %v/%d", rel, tt.want, port)
			}
		}
		if _, err := f.child.AllocatePort(ctx, "udp"); err == nil || !strings.Contains(err.Error(), "unknown protocol") {
			t.Errorf("AllocatePort(udp) error = %v", err)
		}
		if err := f.child.ReleasePort(ctx, "udp", 1); err == nil || !strings.Contains(err.Error(), "unknown protocol") {
			t.Errorf("ReleasePort(udp) error = %v", err)
		}
		if err := f.child.ReleasePort(ctx, "tcp", 0); err == nil || !strings.Contains(err.Error(), "port is 0") {
			t.Errorf("ReleasePort(tcp, 0) error = %v", err)
		}
	})

	t.Run("lookup", func(t *testing.T) {
		tests := []struct {
			module, instance string
			want             []string
		}{
			{"db", "", []string{"db1", "db2"}},
			{"", "web1", []string{"web1"}},
			{"db", "web1", nil},
			{"nope", "", nil},
		}
		for _, tt := range tests {
			got, err := f.child.LookupPorts(ctx, tt.module, tt.instance)
			if err != nil {
				t.Fatalf("LookupPorts(%q, %q): %v", tt.module, tt.instance, err)
			}
			var names []string
			for _, ip := range got {
				names = append(names, ip.GetInstance())
			}
			if fmt.Sprint(names) != fmt.Sprint(tt.want) {
				t.Errorf("LookupPorts(%q, %q) = %v, want %v", tt.module, tt.instance, names, tt.want)
			}
			reqs := f.master.GetPortsRequests()
			last := reqs[len(reqs)-1]
			if last.GetModule() != tt.module || last.GetInstance() != tt.instance {
				t.Errorf("master saw %v", last)
			}
		}
	})

	t.Run("report", func(t *testing.T) {
		if err := f.child.Report(ctx, "cache-warm", "loaded 10 items"); err != nil {
			t.Fatalf("Report: %v", err)
		}
		got := f.master.Lifecycle()
		want := &allexv1.ReportLifecycleRequest{Kind: "cache-warm", Message: "loaded 10 items"}
		if len(got) != 1 || !proto.Equal(got[0], want) {
			t.Errorf("master saw %v, want [%v]", got, want)
		}
		if err := f.child.Report(ctx, "", "x"); err == nil || !strings.Contains(err.Error(), "kind is empty") {
			t.Errorf("Report with empty kind: error = %v", err)
		}
	})
}

func TestCloseRemovesSocket(t *testing.T) {
	f := newChild(t, nil, nil)
	ctx := testContext(t)
	if err := f.child.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	path := processSocketPath(f.dir)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("socket missing before Close: %v", err)
	}
	if err := f.child.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
	if err := f.child.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := f.child.Ready(ctx); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Ready after Close: error = %v", err)
	}
	if _, err := f.child.Listen("tcp"); err == nil {
		t.Error("Listen after Close succeeded")
	}
	if err := f.child.Start(ctx); err == nil || !strings.Contains(err.Error(), "after Close") {
		t.Errorf("Start after Close: error = %v", err)
	}
}

func TestCloseWithoutStart(t *testing.T) {
	f := newChild(t, nil, nil)
	if err := f.child.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestMasterUnavailable(t *testing.T) {
	tests := []struct {
		name    string
		socket  func(t *testing.T) string
		wantErr string
	}{
		{name: "unset", socket: func(*testing.T) string { return "" }, wantErr: "ALLEX_MASTER_SOCKET is not set"},
		{
			name:    "missing file",
			socket:  func(t *testing.T) string { return filepath.Join(socketDir(t), "nothere") },
			wantErr: "no such file",
		},
		{
			name: "nobody listening",
			socket: func(t *testing.T) string {
				path := filepath.Join(socketDir(t), "dead.sock")
				ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				ln.SetUnlinkOnClose(false)
				_ = ln.Close()
				return path
			},
			wantErr: "register with master",
		},
	}
	for _, tt := range tests {
		for _, standalone := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/standalone=%v", tt.name, standalone), func(t *testing.T) {
				dir := socketDir(t)
				opts := child.DefaultOptions()
				opts.SocketDir = dir
				opts.AllowStandalone = standalone
				opts.Env = &child.Env{Module: "echo", Instance: "echo1", MasterSocket: tt.socket(t)}
				c, err := child.New(opts)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				ctx := testContext(t)
				err = c.Start(ctx)
				if standalone {
					if err != nil {
						t.Fatalf("Start with AllowStandalone: %v", err)
					}
				} else if !errors.Is(err, child.ErrNoMaster) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Start error = %v, want ErrNoMaster containing %q", err, tt.wantErr)
				}
				// Standalone or not, the Process socket is served.
				if _, err := mastertest.DialProcess(t, processSocketPath(dir)).Health(ctx, &allexv1.HealthRequest{}); err != nil {
					t.Errorf("Health without a master: %v", err)
				}
				if err := c.Ready(ctx); !errors.Is(err, child.ErrNoMaster) {
					t.Errorf("Ready without a master: error = %v, want ErrNoMaster", err)
				}
				if _, err := c.LookupPorts(ctx, "", ""); !errors.Is(err, child.ErrNoMaster) {
					t.Errorf("LookupPorts without a master: error = %v, want ErrNoMaster", err)
				}
			})
		}
	}
}

func TestNewRejectsBadEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     child.Env
		wantErr string
	}{
		{"empty instance", child.Env{Module: "m"}, "instance is empty"},
		{"unknown protocol", child.Env{Module: "m", Instance: "i", Ports: map[string]uint16{"udp": 1}}, `unknown protocol "udp"`},
		{"zero port", child.Env{Module: "m", Instance: "i", Ports: map[string]uint16{"tcp": 0}}, "tcp port is 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env
			_, err := child.New(child.Options{Env: &env})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
