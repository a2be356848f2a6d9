//go:build !windows

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

func TestDefaultConfigWrittenWhenMissing(t *testing.T) {
	dir := e2e.ShortDir(t)
	sock := filepath.Join(dir, "m.sock")
	p := e2e.Start(t, dir, e2e.Bins.Master, "-socket", sock, "-no-lan", "-state-dir", filepath.Join(dir, "st"))
	p.WaitOutput("allexmaster running", 30*time.Second)
	if !strings.Contains(p.Output(), "wrote the default one") {
		t.Errorf("master did not say it wrote the default config:\n%s", p.Output())
	}
	b, err := os.ReadFile(filepath.Join(dir, "allexmasterconfig.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"lanmanageraddress": "127.0.0.1", "portrangestart": map[string]any{"tcp": 15000.0, "http": 16000.0, "ws": 17000.0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("default config = %s, want %v", b, want)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o660 {
		t.Errorf("socket mode = %o, want 660", mode)
	}
	if err := p.Stop(20 * time.Second); err != nil {
		t.Errorf("master exit: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind after a clean stop: %v", err)
	}
}

func TestBadConfigRefused(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"malformed", "{\"lanmanageraddress\": \"127.0.0.1\",\n  \"portrangestart\": {\"tcp\": 15000,,}}", "line 2"},
		{"unknown key", `{"lanmanageraddress":"127.0.0.1","lanmanagerprot":1,"portrangestart":{"tcp":15000,"http":16000,"ws":17000}}`, "lanmanagerprot"},
		{"port out of range", `{"lanmanageraddress":"127.0.0.1","portrangestart":{"tcp":15000,"http":70000,"ws":17000}}`, "portrangestart.http"},
		{"empty", ``, "allexmasterconfig.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := e2e.ShortDir(t)
			path := e2e.WriteFile(t, dir, "allexmasterconfig.json", tt.content)
			cmd := exec.Command(e2e.Bins.Master, "-socket", filepath.Join(dir, "m.sock"))
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("master accepted a bad config:\n%s", out)
			}
			if !strings.Contains(string(out), "allexmasterconfig.json") || !strings.Contains(string(out), tt.want) {
				t.Errorf("error should name the file and %q:\n%s", tt.want, out)
			}
			after, _ := os.ReadFile(path)
			if string(after) != tt.content {
				t.Errorf("config file was modified")
			}
			if _, err := os.Stat(filepath.Join(dir, "m.sock")); !os.IsNotExist(err) {
				t.Errorf("socket created despite the bad config")
			}
		})
	}
}

func TestSocketOwnership(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	// A second master on the same socket must refuse to start.
	cmd := exec.Command(e2e.Bins.Master, "-socket", m.Socket, "-no-lan")
	cmd.Dir = m.Dir
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Fatalf("second master: err=%v, want an 'in use' refusal:\n%s", err, out)
	}
	// The first one still answers.
	e2e.MustCtl(t, m.Socket, "status")

	t.Run("stale socket is replaced", func(t *testing.T) {
		dir := e2e.ShortDir(t)
		sock := filepath.Join(dir, "s.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
		p := e2e.Start(t, dir, e2e.Bins.Master, "-socket", sock, "-no-lan", "-state-dir", filepath.Join(dir, "st"))
		p.WaitOutput("allexmaster running", 30*time.Second)
		e2e.MustCtl(t, sock, "status")
	})
	t.Run("non-socket file is not removed", func(t *testing.T) {
		dir := e2e.ShortDir(t)
		sock := e2e.WriteFile(t, dir, "s.sock", "precious")
		cmd := exec.Command(e2e.Bins.Master, "-socket", sock, "-no-lan", "-state-dir", filepath.Join(dir, "st"))
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "not a socket") {
			t.Fatalf("err=%v out=%s", err, out)
		}
		if b, _ := os.ReadFile(sock); string(b) != "precious" {
			t.Error("file was clobbered")
		}
	})
}

func TestCtlWithoutMaster(t *testing.T) {
	_, errOut, err := e2e.Ctl(t, filepath.Join(e2e.ShortDir(t), "none.sock"), "ps")
	if err == nil || !strings.Contains(errOut, "no allexmaster is running") {
		t.Fatalf("err=%v stderr=%q", err, errOut)
	}
}

func TestProcessLifecycle(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	evCtx, cancelEv := context.WithCancel(context.Background())
	defer cancelEv()
	events := exec.CommandContext(evCtx, e2e.Bins.Ctl, "-socket", m.Socket, "events", "web")
	evOut := &strings.Builder{}
	var evPipe io.ReadCloser
	evPipe, _ = events.StdoutPipe()
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	evDone := make(chan struct{})
	go func() { io.Copy(evOut, evPipe); close(evDone) }()
	time.Sleep(200 * time.Millisecond) // let the watch subscribe before the start

	m.StartHelper(t, "web", "listen", "-protocols", "tcp,http")
	info := m.WaitState(t, "web", allexv1.ProcessState_PROCESS_STATE_READY)
	if len(info.GetPorts()) != 2 || info.GetPorts()[0].GetPort() != uint32(m.TCP) || info.GetPorts()[1].GetPort() != uint32(m.HTTP) {
		t.Fatalf("ports = %v, want tcp %d http %d", info.GetPorts(), m.TCP, m.HTTP)
	}
	// The child got its ports through the environment and listens on them.
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.HTTP)); err != nil {
		t.Fatalf("child does not listen on its http port: %v", err)
	} else {
		c.Close()
	}
	ps := e2e.MustCtl(t, m.Socket, "ps")
	if !strings.Contains(ps, "web") || !strings.Contains(ps, "ready") || !strings.Contains(ps, fmt.Sprintf("tcp=%d", m.TCP)) {
		t.Errorf("ps table:\n%s", ps)
	}
	ports := e2e.MustCtl(t, m.Socket, "ports", "web")
	if !strings.Contains(ports, strconv.Itoa(m.HTTP)) {
		t.Errorf("ports:\n%s", ports)
	}
	status := e2e.MustCtl(t, m.Socket, "status")
	if !strings.Contains(status, "1 ready") {
		t.Errorf("status:\n%s", status)
	}
	e2e.Eventually(t, 10*time.Second, func() error {
		logs := e2e.MustCtl(t, m.Socket, "logs", "web")
		if !strings.Contains(logs, "listening") {
			return fmt.Errorf("logs lack the child's output: %q", logs)
		}
		return nil
	})

	oldPID := info.GetPid()
	e2e.MustCtl(t, m.Socket, "restart", "web")
	e2e.Eventually(t, 30*time.Second, func() error {
		info = m.Process(t, "web")
		if info.GetPid() == oldPID || info.GetState() != allexv1.ProcessState_PROCESS_STATE_READY {
			return fmt.Errorf("after restart: pid %d state %s", info.GetPid(), info.GetState())
		}
		return nil
	})
	if err := syscall.Kill(int(oldPID), 0); err == nil {
		t.Errorf("old child %d still alive after restart", oldPID)
	}

	out := e2e.MustCtl(t, m.Socket, "stop", "web")
	if !strings.Contains(out, "exited") {
		t.Errorf("stop output: %s", out)
	}
	if err := syscall.Kill(int(info.GetPid()), 0); err == nil {
		t.Errorf("child %d still alive after stop", info.GetPid())
	}
	// Ports are free again: a new child gets the first ones.
	m.StartHelper(t, "web2", "listen", "-protocols", "tcp")
	info2 := m.WaitState(t, "web2", allexv1.ProcessState_PROCESS_STATE_READY)
	if got := info2.GetPorts()[0].GetPort(); got != uint32(m.TCP) {
		t.Errorf("web2 tcp port = %d, want the released %d", got, m.TCP)
	}
	// A duplicate instance is refused.
	_, errOut, err := e2e.Ctl(t, m.Socket, "start", "-env", "ALLEX_TEST_HELPER=listen", "web2", "--", os.Args[0])
	if err == nil || !strings.Contains(errOut, "already") {
		t.Errorf("duplicate start: err=%v %s", err, errOut)
	}

	cancelEv()
	<-evDone
	for _, want := range []string{"starting", "running", "ready", "stopping", "exited"} {
		if !strings.Contains(evOut.String(), want) {
			t.Errorf("events lack %q:\n%s", want, evOut.String())
		}
	}
}

func TestRegisterChecksPeerCredentials(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	// The test process was not spawned by the master.
	c := e2e.Client(t, m.Socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Register(ctx, &allexv1.RegisterRequest{Instance: "x", Pid: int32(os.Getpid())})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not spawned by this master") {
		t.Fatalf("Register from a stranger: %v", err)
	}
	_, err = c.ReportReady(ctx, &allexv1.ReportReadyRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ReportReady from a stranger: %v", err)
	}
	// A spawned child that lies about its pid or instance is refused; the
	// honest registration then succeeds.
	m.StartHelper(t, "liar", "lie", "-readiness", "none")
	e2e.Eventually(t, 20*time.Second, func() error {
		logs := e2e.MustCtl(t, m.Socket, "logs", "liar")
		for _, want := range []string{"lie: PermissionDenied", "other instance: PermissionDenied", "honest: OK"} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("child log lacks %q:\n%s", want, logs)
			}
		}
		return nil
	})
	resp, err := c.GetProcess(ctx, &allexv1.GetProcessRequest{Instance: "liar"})
	if err != nil || !resp.GetProcess().GetRegistered() {
		t.Fatalf("liar registered = %v, %v", resp.GetProcess().GetRegistered(), err)
	}
}

func TestSDKReadinessAndExtraPorts(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	m.StartHelper(t, "sdk", "sdk", "-readiness", "sdk")
	m.WaitState(t, "sdk", allexv1.ProcessState_PROCESS_STATE_READY)
	m.StartHelper(t, "alloc", "alloc", "-readiness", "none", "-protocols", "tcp")
	e2e.Eventually(t, 20*time.Second, func() error {
		logs := e2e.MustCtl(t, m.Socket, "logs", "alloc")
		if !strings.Contains(logs, fmt.Sprintf("extra port: %d OK", m.TCP+1)) {
			return fmt.Errorf("child log: %s", logs)
		}
		return nil
	})
	ports := e2e.MustCtl(t, m.Socket, "ports", "alloc")
	if !strings.Contains(ports, strconv.Itoa(m.TCP+1)) || !strings.Contains(ports, "true") {
		t.Errorf("extra port not listed:\n%s", ports)
	}
}

func TestPortRangeExhausted(t *testing.T) {
	m := e2e.StartMaster(t, 2, "")
	m.StartHelper(t, "a", "listen", "-protocols", "tcp")
	m.StartHelper(t, "b", "listen", "-protocols", "tcp")
	_, errOut, err := e2e.Ctl(t, m.Socket, append(append([]string{"start"}, e2e.HelperArgs("listen", "-protocols", "tcp")...), "c", "--", os.Args[0])...)
	if err == nil || !strings.Contains(errOut, "resourceexhausted") || !strings.Contains(errOut, "tcp") {
		t.Fatalf("third start: err=%v stderr=%s", err, errOut)
	}
	// Nothing was lost: a and b still run, c is not half-started.
	m.WaitState(t, "a", allexv1.ProcessState_PROCESS_STATE_READY)
	m.WaitState(t, "b", allexv1.ProcessState_PROCESS_STATE_READY)
	if m.Process(t, "c") != nil {
		t.Error("c is listed after a failed start")
	}
	e2e.MustCtl(t, m.Socket, "stop", "-rm", "a")
	m.StartHelper(t, "c", "listen", "-protocols", "tcp")
	m.WaitState(t, "c", allexv1.ProcessState_PROCESS_STATE_READY)
}

func TestChildNeverReady(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	m.StartHelper(t, "slow", "never", "-protocols", "tcp", "-start-timeout", "1s", "-restart", "never", "-stop-timeout", "1s")
	info := m.WaitState(t, "slow", allexv1.ProcessState_PROCESS_STATE_FAILED)
	if !strings.Contains(info.GetLastError(), "ready") {
		t.Errorf("last error = %q, want a readiness failure", info.GetLastError())
	}
	st := e2e.MustCtl(t, m.Socket, "-o", "json", "status")
	if strings.Contains(st, `"in_use": 1`) {
		t.Errorf("ports not released:\n%s", st)
	}
}

func TestChildIgnoringSIGTERMIsKilled(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	m.StartHelper(t, "stubborn", "ignoreterm", "-protocols", "tcp", "-stop-timeout", "500ms")
	info := m.WaitState(t, "stubborn", allexv1.ProcessState_PROCESS_STATE_READY)
	e2e.MustCtl(t, m.Socket, "stop", "stubborn")
	after := m.Process(t, "stubborn")
	if after.GetExitSignal() != "SIGKILL" {
		t.Errorf("exit signal = %q, want SIGKILL", after.GetExitSignal())
	}
	if err := syscall.Kill(int(info.GetPid()), 0); err == nil {
		t.Errorf("child %d still alive", info.GetPid())
	}
}

func TestHealthAndReflection(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	conn, err := grpc.NewClient("unix://"+m.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "allex.v1.MachineManager"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", resp, err)
	}
	// Reflection lets generic tools (grpcurl) discover the API on the socket.
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rresp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range rresp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"allex.v1.MachineManager", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}
}

func TestKilledMasterLeavesNoOrphans(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	m.StartHelper(t, "orphan", "listen", "-protocols", "tcp")
	info := m.WaitState(t, "orphan", allexv1.ProcessState_PROCESS_STATE_READY)
	pid := int(info.GetPid())
	_ = syscall.Kill(m.Cmd.Process.Pid, syscall.SIGKILL)
	m.Wait(10 * time.Second)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Skipf("child died with its master already (%v); nothing to clean", err)
	}
	// The next master on the same state dir stops what the dead one left.
	p := e2e.Start(t, m.Dir, e2e.Bins.Master)
	p.WaitOutput("allexmaster running", 30*time.Second)
	e2e.Eventually(t, 20*time.Second, func() error {
		if err := syscall.Kill(pid, 0); err == nil {
			return fmt.Errorf("left-over child %d still alive", pid)
		}
		return nil
	})
	if !strings.Contains(p.Output(), "left behind") {
		t.Errorf("master did not report the left-over child:\n%s", p.Output())
	}
	// Its port is free for new children.
	m.StartHelper(t, "fresh", "listen", "-protocols", "tcp")
	got := m.WaitState(t, "fresh", allexv1.ProcessState_PROCESS_STATE_READY)
	if got.GetPorts()[0].GetPort() != uint32(m.TCP) {
		t.Errorf("fresh got port %d, want %d", got.GetPorts()[0].GetPort(), m.TCP)
	}
}

func TestUnmodifiedProgramByArgTemplating(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	m := e2e.StartMaster(t, 10, "")
	e2e.MustCtl(t, m.Socket, "start", "-module", "pyhttp", "-protocols", "http", "-dir", m.Dir, "pyweb", "--", py, "-m", "http.server", "${ALLEX_HTTP_PORT}", "--bind", "127.0.0.1")
	m.WaitState(t, "pyweb", allexv1.ProcessState_PROCESS_STATE_READY)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", m.HTTP))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d", resp.StatusCode)
	}
}

func TestLogsFollow(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	m.StartHelper(t, "chatty", "listen", "-protocols", "tcp")
	m.WaitState(t, "chatty", allexv1.ProcessState_PROCESS_STATE_READY)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2e.Bins.Ctl, "-socket", m.Socket, "logs", "-f", "-n", "1", "chatty")
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Stopping the child makes it print "got SIGTERM"; the follow stream
	// delivers it and ends when the child is gone.
	time.Sleep(300 * time.Millisecond)
	e2e.MustCtl(t, m.Socket, "stop", "chatty")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("logs -f: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("logs -f did not end after the child stopped")
	}
	if !strings.Contains(out.String(), "got SIGTERM") {
		t.Errorf("followed logs lack the child's last words:\n%s", out.String())
	}
	if strings.Contains(out.String(), "helper listen pid") {
		t.Errorf("-n 1 should skip earlier lines:\n%s", out.String())
	}
}

func TestFlagsOverrideConfig(t *testing.T) {
	dir := e2e.ShortDir(t)
	base := e2e.FreeBlock(t, 30)
	e2e.WriteFile(t, dir, "allexmasterconfig.json", e2e.MasterConfig(dir, base, 10, ""))
	other := filepath.Join(dir, "flag.sock")
	p := e2e.Start(t, dir, e2e.Bins.Master, "-socket", other, "-machine-id", "flagged")
	p.WaitOutput("allexmaster running", 30*time.Second)
	st := e2e.MustCtl(t, other, "-o", "json", "status")
	if !strings.Contains(st, `"flagged"`) {
		t.Errorf("machine id flag ignored:\n%s", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "m.sock")); !os.IsNotExist(err) {
		t.Errorf("master listens on the config's socket despite -socket")
	}
}

// TestSocketGroup: with "socketgroup", the machine socket (0660) belongs
// to that group, and a user in it uses allexctl without root; a user
// outside it is refused by the socket's mode, with a hint.
func TestSocketGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run allexctl as other users")
	}
	const group, uid = 1, 65534 // daemon, nobody
	m := e2e.StartMaster(t, 5, fmt.Sprintf(`,"socketgroup":"%d"`, group))
	if err := os.Chmod(m.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(m.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Gid != group || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket: group %d, mode %v; want %d, 0660", st.Gid, fi.Mode().Perm(), group)
	}
	// The tests' binaries are in a private dir: give others a copy.
	pub, err := os.MkdirTemp("", "allexpub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pub) })
	bin := filepath.Join(pub, "allexctl")
	b, err := os.ReadFile(e2e.Bins.Ctl)
	if err == nil {
		err = os.WriteFile(bin, b, 0o755)
	}
	if err == nil {
		err = os.Chmod(pub, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	as := func(gid uint32) (string, error) {
		cmd := exec.Command(bin, "-socket", m.Socket, "ps")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := as(group); err != nil || !strings.HasPrefix(out, "INSTANCE") {
		t.Errorf("a member of the group: %v\n%s", err, out)
	}
	if out, err := as(uid); err == nil || !strings.Contains(out, "permission denied") || !strings.Contains(out, "socketgroup") {
		t.Errorf("a user outside the group: %v\n%s", err, out)
	}
}
