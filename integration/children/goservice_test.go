//go:build !windows

package children

import (
	"bufio"
	"context"
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

	"github.com/gorilla/websocket"

	"github.com/allex-go/allex/child/mastertest"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// buildTimeout bounds compiling the example on a loaded machine.
const buildTimeout = 5 * time.Minute

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// goFlags are the build flags shared by `go build` and `go run` so the
// second finds everything in the build cache.
func goFlags() []string {
	if e2e.RaceEnabled {
		return []string{"-race"}
	}
	return nil
}

func buildGoService(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "goservice")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	args := append(append([]string{"build"}, goFlags()...), "-o", bin, "./examples/goservice")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build goservice: %v\n%s", err, out)
	}
	return bin
}

// TestGoService runs examples/goservice under the real master: built with
// `go build`, and from source with `go run` (the master accepts Register
// from any member of the child's process group).
func TestGoService(t *testing.T) {
	t.Parallel()
	bin := buildGoService(t)
	root := repoRoot(t)
	m := e2e.StartMaster(t, 10, "")
	tests := []struct {
		name     string
		instance string
		cmd      []string
		// wrapped: the master's child is `go`, the service its child.
		wrapped bool
	}{
		{"built binary", "gosvc", []string{bin}, false},
		{"go run", "gorun", append(append([]string{"go", "run"}, goFlags()...), "./examples/goservice"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"start", "-protocols", "tcp,http,ws", "-readiness", "sdk", "-restart", "never",
				"-stop-timeout", "15s", "-start-timeout", "3m", "-dir", root, tt.instance, "--"}
			e2e.MustCtl(t, m.Socket, append(args, tt.cmd...)...)
			info := waitState(t, m, tt.instance, allexv1.ProcessState_PROCESS_STATE_READY)

			ps := psEntry(t, m, tt.instance)
			sock, _ := ps["process_socket"].(string)
			if ps["registered"] != true || sock == "" {
				t.Fatalf("ps -o json: registered=%v process_socket=%q, want true and a path", ps["registered"], sock)
			}
			svcPID, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(sock), "allexprocess."))
			if err != nil || filepath.Dir(sock) != "/tmp" {
				t.Fatalf("process_socket %q is not /tmp/allexprocess.<pid>", sock)
			}
			if tt.wrapped == (svcPID == int(info.GetPid())) {
				t.Errorf("service pid %d, master's child pid %d, wrapped=%v", svcPID, info.GetPid(), tt.wrapped)
			}
			if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
				t.Fatalf("process socket %s: %v", sock, err)
			}
			procInfo(t, sock, tt.instance, svcPID)

			ports := map[allexv1.Protocol]uint32{}
			for _, p := range info.GetPorts() {
				ports[p.GetProtocol()] = p.GetPort()
			}
			checkTCPEcho(t, ports[allexv1.Protocol_PROTOCOL_TCP])
			checkHTTP(t, ports[allexv1.Protocol_PROTOCOL_HTTP], "hello from "+tt.instance+"\n")
			checkWSEcho(t, ports[allexv1.Protocol_PROTOCOL_WS])

			out := e2e.MustCtl(t, m.Socket, "stop", tt.instance)
			after := getProcess(t, m, tt.instance)
			if after.GetState() != allexv1.ProcessState_PROCESS_STATE_EXITED || after.GetExitCode() != 0 || after.GetExitSignal() != "" {
				t.Errorf("after stop: state %s code %d signal %q (%s); want a clean exit 0", after.GetState(), after.GetExitCode(), after.GetExitSignal(), out)
			}
			// The library logs the Process.Shutdown request with the grace
			// the master sent (its stop timeout); a SIGTERM would not.
			waitLogs(t, m, tt.instance, "shutdown requested: grace=15s")
			if strings.Contains(m.Output(), "shutdown hook failed") {
				t.Errorf("master fell back to signals:\n%s", m.Output())
			}
			noFile(t, sock)
			if err := syscall.Kill(svcPID, 0); err == nil {
				t.Errorf("service %d still alive", svcPID)
			}
		})
	}
}

// procInfo checks allex.v1.Process Info and Health on the child's socket.
func procInfo(t *testing.T, sock, instance string, pid int) {
	t.Helper()
	pc := mastertest.DialProcess(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := pc.Info(ctx, &allexv1.InfoRequest{})
	if err != nil || info.GetInstance() != instance || info.GetPid() != int32(pid) || len(info.GetPorts()) != 3 {
		t.Errorf("Process.Info = %v, %v; want instance %s pid %d and 3 ports", info, err, instance, pid)
	}
	h, err := pc.Health(ctx, &allexv1.HealthRequest{})
	if err != nil || !h.GetHealthy() {
		t.Errorf("Process.Health = %v, %v", h, err)
	}
}

func checkTCPEcho(t *testing.T, port uint32) {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		t.Fatalf("tcp %d: %v", port, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "ping over tcp\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping over tcp\n" {
		t.Errorf("tcp echo = %q, %v", line, err)
	}
}

func checkHTTP(t *testing.T, port uint32, want string) {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatalf("http %d: %v", port, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != want {
		t.Errorf("GET / = %d %q, %v; want 200 %q", resp.StatusCode, body, err, want)
	}
}

func checkWSEcho(t *testing.T, port uint32) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	c, resp, err := d.Dial(fmt.Sprintf("ws://127.0.0.1:%d/", port), nil)
	if err != nil {
		t.Fatalf("ws %d: %v", port, err)
	}
	resp.Body.Close()
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte("ping over ws")); err != nil {
		t.Fatal(err)
	}
	typ, msg, err := c.ReadMessage()
	if err != nil || typ != websocket.TextMessage || string(msg) != "ping over ws" {
		t.Errorf("ws echo = %d %q, %v", typ, msg, err)
	}
}
