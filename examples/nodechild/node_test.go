//go:build unix

package nodechild_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/allex-go/allex/child/mastertest"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// waitTimeout is generous: the machine may be loaded.
const waitTimeout = 60 * time.Second

func TestNodeChild(t *testing.T) {
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
			stop: func(t *testing.T, ctx context.Context, cmd *exec.Cmd, processSocket string) {
				pc := mastertest.DialProcess(t, processSocket)
				info, err := pc.Info(ctx, &allexv1.InfoRequest{})
				if err != nil {
					t.Fatalf("Info: %v", err)
				}
				if info.GetPid() != int32(cmd.Process.Pid) || info.GetInstance() != "node1" || info.GetModule() != "nodechild" {
					t.Errorf("Info = %v", info)
				}
				health, err := pc.Health(ctx, &allexv1.HealthRequest{})
				if err != nil || !health.GetHealthy() {
					t.Errorf("Health = %v, %v; want healthy", health, err)
				}
				if _, err := pc.Shutdown(ctx, &allexv1.ShutdownRequest{Grace: durationpb.New(20 * time.Second)}); err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			},
		},
	}
	node := e2e.EnsureNodeModules(t, ".")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
			defer cancel()
			m := mastertest.New(t)
			port := mastertest.FreePort(t)
			cmd := exec.Command(node, "index.js")
			cmd.Env = append(os.Environ(),
				"ALLEX_MODULE=nodechild",
				"ALLEX_INSTANCE=node1",
				fmt.Sprintf("ALLEX_HTTP_PORT=%d", port),
				fmt.Sprintf(`ALLEX_PORTS={"http":%d}`, port),
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

			m.Wait(t, "ReportReady from node", waitTimeout, func() bool { return m.Readies() > 0 })
			regs := m.Registrations()
			if len(regs) != 1 {
				t.Fatalf("got %d registrations, want 1", len(regs))
			}
			if regs[0].GetPid() != int32(cmd.Process.Pid) || regs[0].GetInstance() != "node1" || regs[0].GetProcessSocket() != processSocket {
				t.Errorf("Register = %v, want pid %d, instance node1, socket %s", regs[0], cmd.Process.Pid, processSocket)
			}
			if n := len(m.GetPortsRequests()); n != 1 {
				t.Errorf("GetPorts calls = %d, want 1", n)
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

			client := &http.Client{Timeout: waitTimeout}
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || string(body) != "hello from node node1\n" {
				t.Fatalf("GET = %d %q, %v; want 200 %q", resp.StatusCode, body, err, "hello from node node1\n")
			}
			client.CloseIdleConnections()

			tt.stop(t, ctx, cmd, processSocket)
			select {
			case err := <-waited:
				exited = true
				if err != nil {
					t.Fatalf("node exited with %v, want 0", err)
				}
			case <-time.After(waitTimeout):
				t.Fatal("node did not exit after being asked to stop")
			}
			if _, err := os.Stat(processSocket); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("process socket left behind: %v", err)
			}
		})
	}
}
