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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// master is a running allexmaster without a LAN manager, with its own
// socket, state dir and a free port block of size 10 per protocol.
type master struct {
	*proc
	dir, socket   string
	tcp, http, ws int
}

func masterConfig(dir string, base, size int, extra string) string {
	return fmt.Sprintf(`{"lanmanageraddress":"","portrangestart":{"tcp":%d,"http":%d,"ws":%d},"portrangesize":%d,"socket":%q,"statedir":%q%s}`,
		base, base+size, base+2*size, size, filepath.Join(dir, "m.sock"), filepath.Join(dir, "state"), extra)
}

func startMaster(t *testing.T, size int, extra string) *master {
	t.Helper()
	dir := shortDir(t)
	base := freeBlock(t, 3*size)
	writeFile(t, dir, "allexmasterconfig.json", masterConfig(dir, base, size, extra))
	m := &master{dir: dir, socket: filepath.Join(dir, "m.sock"), tcp: base, http: base + size, ws: base + 2*size}
	m.proc = start(t, dir, bins.master, "-log-level", "debug")
	m.waitOutput("allexmaster running", 30*time.Second)
	return m
}

func helperArgs(mode string, extra ...string) []string {
	args := append([]string{"-env", "ALLEX_TEST_HELPER=" + mode}, extra...)
	return args
}

// startHelper starts the test binary as a child through allexctl.
func (m *master) startHelper(t *testing.T, instance, mode string, flags ...string) string {
	t.Helper()
	args := append([]string{"start"}, helperArgs(mode, flags...)...)
	args = append(args, instance, "--", os.Args[0])
	return mustCtl(t, m.socket, args...)
}

func (m *master) process(t *testing.T, instance string) *allexv1.ProcessInfo {
	t.Helper()
	out := mustCtl(t, m.socket, "-o", "json", "ps")
	var resp struct {
		Processes []struct {
			Instance  string `json:"instance"`
			Pid       int32  `json:"pid"`
			State     string `json:"state"`
			LastError string `json:"last_error"`
			ExitSig   string `json:"exit_signal"`
			Ports     []struct {
				Protocol string `json:"protocol"`
				Port     uint32 `json:"port"`
			} `json:"ports"`
		} `json:"processes"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("ps -o json: %v\n%s", err, out)
	}
	for _, p := range resp.Processes {
		if p.Instance == instance {
			info := &allexv1.ProcessInfo{Instance: p.Instance, Pid: p.Pid, LastError: p.LastError, ExitSignal: p.ExitSig}
			info.State = allexv1.ProcessState(allexv1.ProcessState_value[p.State])
			for _, pp := range p.Ports {
				info.Ports = append(info.Ports, &allexv1.PortAssignment{Protocol: allexv1.Protocol(allexv1.Protocol_value[pp.Protocol]), Port: pp.Port})
			}
			return info
		}
	}
	return nil
}

func (m *master) waitState(t *testing.T, instance string, want allexv1.ProcessState) *allexv1.ProcessInfo {
	t.Helper()
	var info *allexv1.ProcessInfo
	eventually(t, 30*time.Second, func() error {
		info = m.process(t, instance)
		if info == nil {
			return fmt.Errorf("%s not listed", instance)
		}
		if info.GetState() != want {
			return fmt.Errorf("%s is %s, want %s (%s)", instance, info.GetState(), want, info.GetLastError())
		}
		return nil
	})
	return info
}

func TestDefaultConfigWrittenWhenMissing(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "m.sock")
	p := start(t, dir, bins.master, "-socket", sock, "-no-lan", "-state-dir", filepath.Join(dir, "st"))
	p.waitOutput("allexmaster running", 30*time.Second)
	if !strings.Contains(p.output(), "wrote the default one") {
		t.Errorf("master did not say it wrote the default config:\n%s", p.output())
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
	if err := p.stop(20 * time.Second); err != nil {
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
			dir := shortDir(t)
			path := writeFile(t, dir, "allexmasterconfig.json", tt.content)
			cmd := exec.Command(bins.master, "-socket", filepath.Join(dir, "m.sock"))
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
	m := startMaster(t, 10, "")
	// A second master on the same socket must refuse to start.
	cmd := exec.Command(bins.master, "-socket", m.socket, "-no-lan")
	cmd.Dir = m.dir
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Fatalf("second master: err=%v, want an 'in use' refusal:\n%s", err, out)
	}
	// The first one still answers.
	mustCtl(t, m.socket, "status")

	t.Run("stale socket is replaced", func(t *testing.T) {
		dir := shortDir(t)
		sock := filepath.Join(dir, "s.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
		p := start(t, dir, bins.master, "-socket", sock, "-no-lan", "-state-dir", filepath.Join(dir, "st"))
		p.waitOutput("allexmaster running", 30*time.Second)
		mustCtl(t, sock, "status")
	})
	t.Run("non-socket file is not removed", func(t *testing.T) {
		dir := shortDir(t)
		sock := writeFile(t, dir, "s.sock", "precious")
		cmd := exec.Command(bins.master, "-socket", sock, "-no-lan", "-state-dir", filepath.Join(dir, "st"))
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
	_, errOut, err := ctl(t, filepath.Join(shortDir(t), "none.sock"), "ps")
	if err == nil || !strings.Contains(errOut, "no allexmaster is running") {
		t.Fatalf("err=%v stderr=%q", err, errOut)
	}
}

func TestProcessLifecycle(t *testing.T) {
	m := startMaster(t, 10, "")
	evCtx, cancelEv := context.WithCancel(context.Background())
	defer cancelEv()
	events := exec.CommandContext(evCtx, bins.ctl, "-socket", m.socket, "events", "web")
	evOut := &strings.Builder{}
	var evPipe io.ReadCloser
	evPipe, _ = events.StdoutPipe()
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	evDone := make(chan struct{})
	go func() { io.Copy(evOut, evPipe); close(evDone) }()
	time.Sleep(200 * time.Millisecond) // let the watch subscribe before the start

	m.startHelper(t, "web", "listen", "-protocols", "tcp,http")
	info := m.waitState(t, "web", allexv1.ProcessState_PROCESS_STATE_READY)
	if len(info.GetPorts()) != 2 || info.GetPorts()[0].GetPort() != uint32(m.tcp) || info.GetPorts()[1].GetPort() != uint32(m.http) {
		t.Fatalf("ports = %v, want tcp %d http %d", info.GetPorts(), m.tcp, m.http)
	}
	// The child got its ports through the environment and listens on them.
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.http)); err != nil {
		t.Fatalf("child does not listen on its http port: %v", err)
	} else {
		c.Close()
	}
	ps := mustCtl(t, m.socket, "ps")
	if !strings.Contains(ps, "web") || !strings.Contains(ps, "ready") || !strings.Contains(ps, fmt.Sprintf("tcp=%d", m.tcp)) {
		t.Errorf("ps table:\n%s", ps)
	}
	ports := mustCtl(t, m.socket, "ports", "web")
	if !strings.Contains(ports, strconv.Itoa(m.http)) {
		t.Errorf("ports:\n%s", ports)
	}
	status := mustCtl(t, m.socket, "status")
	if !strings.Contains(status, "1 ready") {
		t.Errorf("status:\n%s", status)
	}
	eventually(t, 10*time.Second, func() error {
		logs := mustCtl(t, m.socket, "logs", "web")
		if !strings.Contains(logs, "listening") {
			return fmt.Errorf("logs lack the child's output: %q", logs)
		}
		return nil
	})

	oldPID := info.GetPid()
	mustCtl(t, m.socket, "restart", "web")
	eventually(t, 30*time.Second, func() error {
		info = m.process(t, "web")
		if info.GetPid() == oldPID || info.GetState() != allexv1.ProcessState_PROCESS_STATE_READY {
			return fmt.Errorf("after restart: pid %d state %s", info.GetPid(), info.GetState())
		}
		return nil
	})
	if err := syscall.Kill(int(oldPID), 0); err == nil {
		t.Errorf("old child %d still alive after restart", oldPID)
	}

	out := mustCtl(t, m.socket, "stop", "web")
	if !strings.Contains(out, "exited") {
		t.Errorf("stop output: %s", out)
	}
	if err := syscall.Kill(int(info.GetPid()), 0); err == nil {
		t.Errorf("child %d still alive after stop", info.GetPid())
	}
	// Ports are free again: a new child gets the first ones.
	m.startHelper(t, "web2", "listen", "-protocols", "tcp")
	info2 := m.waitState(t, "web2", allexv1.ProcessState_PROCESS_STATE_READY)
	if got := info2.GetPorts()[0].GetPort(); got != uint32(m.tcp) {
		t.Errorf("web2 tcp port = %d, want the released %d", got, m.tcp)
	}
	// A duplicate instance is refused.
	_, errOut, err := ctl(t, m.socket, "start", "-env", "ALLEX_TEST_HELPER=listen", "web2", "--", os.Args[0])
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
	m := startMaster(t, 10, "")
	// The test process was not spawned by the master.
	c := client(t, m.socket)
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
	m.startHelper(t, "liar", "lie", "-readiness", "none")
	eventually(t, 20*time.Second, func() error {
		logs := mustCtl(t, m.socket, "logs", "liar")
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
	m := startMaster(t, 10, "")
	m.startHelper(t, "sdk", "sdk", "-readiness", "sdk")
	m.waitState(t, "sdk", allexv1.ProcessState_PROCESS_STATE_READY)
	m.startHelper(t, "alloc", "alloc", "-readiness", "none", "-protocols", "tcp")
	eventually(t, 20*time.Second, func() error {
		logs := mustCtl(t, m.socket, "logs", "alloc")
		if !strings.Contains(logs, fmt.Sprintf("extra port: %d OK", m.tcp+1)) {
			return fmt.Errorf("child log: %s", logs)
		}
		return nil
	})
	ports := mustCtl(t, m.socket, "ports", "alloc")
	if !strings.Contains(ports, strconv.Itoa(m.tcp+1)) || !strings.Contains(ports, "true") {
		t.Errorf("extra port not listed:\n%s", ports)
	}
}

func TestPortRangeExhausted(t *testing.T) {
	m := startMaster(t, 2, "")
	m.startHelper(t, "a", "listen", "-protocols", "tcp")
	m.startHelper(t, "b", "listen", "-protocols", "tcp")
	_, errOut, err := ctl(t, m.socket, append(append([]string{"start"}, helperArgs("listen", "-protocols", "tcp")...), "c", "--", os.Args[0])...)
	if err == nil || !strings.Contains(errOut, "resourceexhausted") || !strings.Contains(errOut, "tcp") {
		t.Fatalf("third start: err=%v stderr=%s", err, errOut)
	}
	// Nothing was lost: a and b still run, c is not half-started.
	m.waitState(t, "a", allexv1.ProcessState_PROCESS_STATE_READY)
	m.waitState(t, "b", allexv1.ProcessState_PROCESS_STATE_READY)
	if m.process(t, "c") != nil {
		t.Error("c is listed after a failed start")
	}
	mustCtl(t, m.socket, "stop", "-rm", "a")
	m.startHelper(t, "c", "listen", "-protocols", "tcp")
	m.waitState(t, "c", allexv1.ProcessState_PROCESS_STATE_READY)
}

func TestChildNeverReady(t *testing.T) {
	m := startMaster(t, 10, "")
	m.startHelper(t, "slow", "never", "-protocols", "tcp", "-start-timeout", "1s", "-restart", "never", "-stop-timeout", "1s")
	info := m.waitState(t, "slow", allexv1.ProcessState_PROCESS_STATE_FAILED)
	if !strings.Contains(info.GetLastError(), "ready") {
		t.Errorf("last error = %q, want a readiness failure", info.GetLastError())
	}
	st := mustCtl(t, m.socket, "-o", "json", "status")
	if strings.Contains(st, `"in_use": 1`) {
		t.Errorf("ports not released:\n%s", st)
	}
}

func TestChildIgnoringSIGTERMIsKilled(t *testing.T) {
	m := startMaster(t, 10, "")
	m.startHelper(t, "stubborn", "ignoreterm", "-protocols", "tcp", "-stop-timeout", "500ms")
	info := m.waitState(t, "stubborn", allexv1.ProcessState_PROCESS_STATE_READY)
	mustCtl(t, m.socket, "stop", "stubborn")
	after := m.process(t, "stubborn")
	if after.GetExitSignal() != "SIGKILL" {
		t.Errorf("exit signal = %q, want SIGKILL", after.GetExitSignal())
	}
	if err := syscall.Kill(int(info.GetPid()), 0); err == nil {
		t.Errorf("child %d still alive", info.GetPid())
	}
}

func TestHealthService(t *testing.T) {
	m := startMaster(t, 10, "")
	conn, err := grpc.NewClient("unix://"+m.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
}

func TestKilledMasterLeavesNoOrphans(t *testing.T) {
	m := startMaster(t, 10, "")
	m.startHelper(t, "orphan", "listen", "-protocols", "tcp")
	info := m.waitState(t, "orphan", allexv1.ProcessState_PROCESS_STATE_READY)
	pid := int(info.GetPid())
	_ = syscall.Kill(m.cmd.Process.Pid, syscall.SIGKILL)
	m.wait(10 * time.Second)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Skipf("child died with its master already (%v); nothing to clean", err)
	}
	// The next master on the same state dir stops what the dead one left.
	p := start(t, m.dir, bins.master)
	p.waitOutput("allexmaster running", 30*time.Second)
	eventually(t, 20*time.Second, func() error {
		if err := syscall.Kill(pid, 0); err == nil {
			return fmt.Errorf("left-over child %d still alive", pid)
		}
		return nil
	})
	if !strings.Contains(p.output(), "left behind") {
		t.Errorf("master did not report the left-over child:\n%s", p.output())
	}
	// Its port is free for new children.
	m.startHelper(t, "fresh", "listen", "-protocols", "tcp")
	got := m.waitState(t, "fresh", allexv1.ProcessState_PROCESS_STATE_READY)
	if got.GetPorts()[0].GetPort() != uint32(m.tcp) {
		t.Errorf("fresh got port %d, want %d", got.GetPorts()[0].GetPort(), m.tcp)
	}
}

func TestUnmodifiedProgramByArgTemplating(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	m := startMaster(t, 10, "")
	mustCtl(t, m.socket, "start", "-module", "pyhttp", "-protocols", "http", "-dir", m.dir, "pyweb", "--", py, "-m", "http.server", "${ALLEX_HTTP_PORT}", "--bind", "127.0.0.1")
	m.waitState(t, "pyweb", allexv1.ProcessState_PROCESS_STATE_READY)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", m.http))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d", resp.StatusCode)
	}
}
