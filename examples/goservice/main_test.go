//go:build unix

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/allex-go/allex/child/mastertest"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

const (
	helperEnv   = "GOSERVICE_TEST_HELPER"
	waitTimeout = 60 * time.Second
)

// TestHelperProcess runs the real main in a re-executed test binary.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process for TestGoService")
	}
	main()
	os.Exit(0)
}

func TestGoService(t *testing.T) {
	tests := []struct {
		name string
		stop func(t *testing.T, ctx context.Context, cmd *exec.Cmd, processSocket string)
	}{
		{
			name: "SIGTERM",
			stop: func(t *testing.T, _ context.Context, cmd *exec.Cmd, _ string) {
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "Shutdown RPC",
			stop: func(t *testing.T, ctx context.Context, _ *exec.Cmd, processSocket string) {
				pc := mastertest.DialProcess(t, processSocket)
				info, err := pc.Info(ctx, &allexv1.InfoRequest{})
				if err != nil {
					t.Fatalf("Info: %v", err)
				}
				if info.GetInstance() != "go1" || info.GetModule() != "goservice" || len(info.GetPorts()) != 3 {
					t.Errorf("Info = %v", info)
				}
				if _, err := pc.Shutdown(ctx, &allexv1.ShutdownRequest{Grace: durationpb.New(20 * time.Second)}); err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
			defer cancel()
			m := mastertest.New(t)
			ports := mastertest.FreePorts(t, 3)
			tcpPort, httpPort, wsPort := ports[0], ports[1], ports[2]
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
			cmd.Env = append(os.Environ(),
				helperEnv+"=1",
				"ALLEX_MODULE=goservice",
				"ALLEX_INSTANCE=go1",
				fmt.Sprintf("ALLEX_TCP_PORT=%d", tcpPort),
				fmt.Sprintf("ALLEX_HTTP_PORT=%d", httpPort),
				fmt.Sprintf("ALLEX_WS_PORT=%d", wsPort),
				fmt.Sprintf(`ALLEX_PORTS={"tcp":%d,"http":%d,"ws":%d}`, tcpPort, httpPort, wsPort),
				"ALLEX_MASTER_SOCKET="+m.Path,
			)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			exited := false
			t.Cleanup(func() {
				if !exited {
					_ = cmd.Process.Kill()
					<-waited
				}
			})
			processSocket := "/tmp/allexprocess." + strconv.Itoa(cmd.Process.Pid)
			t.Cleanup(func() { _ = os.Remove(processSocket) })

			m.Wait(t, "ReportReady", waitTimeout, func() bool { return m.Readies() > 0 })
			regs := m.Registrations()
			if len(regs) != 1 || regs[0].GetPid() != int32(cmd.Process.Pid) || regs[0].GetInstance() != "go1" ||
				regs[0].GetProcessSocket() != processSocket {
				t.Fatalf("registrations = %v, want one for pid %d", regs, cmd.Process.Pid)
			}
			if n := m.Readies(); n != 1 {
				t.Errorf("ReportReady calls = %d, want 1", n)
			}
			// The master identifies children by peer credentials (Linux only
			// in the in-test master): the calls must come from the process
			// itself.
			if runtime.GOOS == "linux" {
				want := []int{cmd.Process.Pid}
				if got := m.RegisterPeerPIDs(); !slices.Equal(got, want) {
					t.Errorf("Register came from pids %v, want %v", got, want)
				}
				if got := m.ReadyPeerPIDs(); !slices.Equal(got, want) {
					t.Errorf("ReportReady came from pids %v, want %v", got, want)
				}
			}

			// TCP echo; the connection stays open across the stop.
			tcpConn, err := net.DialTimeout("tcp", hostPort(tcpPort), waitTimeout)
			if err != nil {
				t.Fatalf("dial tcp: %v", err)
			}
			defer tcpConn.Close()
			_ = tcpConn.SetDeadline(time.Now().Add(waitTimeout))
			if _, err := io.WriteString(tcpConn, "ping\n"); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(tcpConn).ReadString('\n')
			if err != nil || line != "ping\n" {
				t.Fatalf("tcp echo = %q, %v", line, err)
			}

			// HTTP.
			httpTests := []struct {
				path     string
				wantCode int
				wantBody string
			}{
				{"/", http.StatusOK, "hello from go1\n"},
				{"/healthz", http.StatusOK, "ok\n"},
				{"/nope", http.StatusNotFound, ""},
			}
			client := &http.Client{Timeout: waitTimeout}
			for _, ht := range httpTests {
				resp, err := client.Get("http://" + hostPort(httpPort) + ht.path)
				if err != nil {
					t.Fatalf("GET %s: %v", ht.path, err)
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != ht.wantCode || (ht.wantBody != "" && string(body) != ht.wantBody) {
					t.Errorf("GET %s = %d %q, want %d %q", ht.path, resp.StatusCode, body, ht.wantCode, ht.wantBody)
				}
			}

			// WebSocket echo; this connection also stays open across the stop.
			dialer := websocket.Dialer{HandshakeTimeout: waitTimeout}
			wsConn, _, err := dialer.DialContext(ctx, "ws://"+hostPort(wsPort)+"/", nil)
			if err != nil {
				t.Fatalf("dial ws: %v", err)
			}
			defer wsConn.Close()
			_ = wsConn.SetReadDeadline(time.Now().Add(waitTimeout))
			for _, msg := range []string{"hello", strings.Repeat("x", 70000)} {
				if err := wsConn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				typ, got, err := wsConn.ReadMessage()
				if err != nil || typ != websocket.TextMessage || string(got) != msg {
					t.Fatalf("ws echo: type %d, %d bytes, %v; want text %d bytes", typ, len(got), err, len(msg))
				}
			}

			tt.stop(t, ctx, cmd, processSocket)
			select {
			case err := <-waited:
				exited = true
				if err != nil {
					t.Fatalf("goservice exited with %v, want 0", err)
				}
			case <-time.After(waitTimeout):
				t.Fatal("goservice did not exit after being asked to stop")
			}
			if _, err := os.Stat(processSocket); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("process socket left behind: %v", err)
			}
		})
	}
}

func hostPort(port uint16) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
}
