//go:build unix

package child_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/allex-go/allex/child"
	"github.com/allex-go/allex/child/mastertest"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

const helperEnv = "ALLEX_CHILD_TEST_HELPER"

// TestHelperProcess is the child side of TestRun: a real process using
// child.Run, re-executed from the test binary.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process for TestRun")
	}
	opts := child.DefaultOptions()
	opts.SocketDir = os.Getenv(helperEnv)
	err := child.Run(context.Background(), opts, func(ctx context.Context, c *child.Child) error {
		ln, err := c.Listen("tcp")
		if err != nil {
			return err
		}
		go func() {
			<-ctx.Done()
			_ = ln.Close()
		}()
		for range 1000 {
			conn, err := ln.Accept()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			_ = conn.Close()
		}
		return errors.New("too many connections")
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

func TestRun(t *testing.T) {
	tests := []struct {
		name string
		stop func(t *testing.T, cmd *exec.Cmd, processSocket string)
	}{
		{
			name: "SIGTERM",
			stop: func(t *testing.T, cmd *exec.Cmd, _ string) {
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "Shutdown RPC",
			stop: func(t *testing.T, _ *exec.Cmd, processSocket string) {
				pc := mastertest.DialProcess(t, processSocket)
				if _, err := pc.Shutdown(testContext(t), &allexv1.ShutdownRequest{Grace: durationpb.New(10 * time.Second)}); err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mastertest.New(t)
			dir := socketDir(t)
			port := mastertest.FreePort(t)
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(),
				helperEnv+"="+dir,
				"ALLEX_MODULE=echo",
				"ALLEX_INSTANCE=echo7",
				"ALLEX_TCP_PORT="+strconv.Itoa(int(port)),
				fmt.Sprintf(`ALLEX_PORTS={"tcp":%d}`, port),
				"ALLEX_MASTER_SOCKET="+m.Path,
			)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			t.Cleanup(func() {
				select {
				case <-waited:
				default:
					_ = cmd.Process.Kill()
					<-waited
				}
			})

			m.Wait(t, "ready", waitTimeout, func() bool { return m.Readies() == 1 })
			regs := m.Registrations()
			wantSocket := dir + "/allexprocess." + strconv.Itoa(cmd.Process.Pid)
			if len(regs) != 1 || regs[0].GetPid() != int32(cmd.Process.Pid) ||
				regs[0].GetInstance() != "echo7" || regs[0].GetProcessSocket() != wantSocket {
				t.Fatalf("registrations = %v, want one for pid %d, echo7, %s", regs, cmd.Process.Pid, wantSocket)
			}
			if got, want := m.RegisterPeerPIDs(), []int{peerPID(cmd.Process.Pid)}; !slices.Equal(got, want) {
				t.Errorf("Register peer pids = %v, want %v", got, want)
			}
			if got, want := m.ReadyPeerPIDs(), []int{peerPID(cmd.Process.Pid)}; !slices.Equal(got, want) {
				t.Errorf("ReportReady peer pids = %v, want %v", got, want)
			}
			conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
			if err != nil {
				t.Fatalf("dial the child's tcp port: %v", err)
			}
			_ = conn.Close()

			tt.stop(t, cmd, wantSocket)
			select {
			case err := <-waited:
				waited <- err // let Cleanup see it exited
				if err != nil {
					t.Fatalf("child exited with %v, want 0", err)
				}
			case <-time.After(waitTimeout):
				t.Fatal("child did not exit after being asked to stop")
			}
			if _, err := os.Stat(wantSocket); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("process socket left behind: %v", err)
			}
		})
	}
}
