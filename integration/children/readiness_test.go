//go:build !windows

package children

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// TestReadinessModes runs each readiness mode against children that do and
// do not satisfy it, all under one real master.
func TestReadinessModes(t *testing.T) {
	t.Parallel()
	m := e2e.StartMaster(t, 10, "")
	ev := watchEvents(t, m)
	tests := []struct {
		name, mode, readiness, protocols string
		want                             allexv1.ProcessState
		// listening: the child's ports accept connections once ready.
		listening bool
	}{
		{"sdk reported", "sdk", "sdk", "", allexv1.ProcessState_PROCESS_STATE_READY, false},
		{"sdk never reported", "listen", "sdk", "tcp", allexv1.ProcessState_PROCESS_STATE_FAILED, true},
		{"ports listening", "listen", "ports", "tcp,http", allexv1.ProcessState_PROCESS_STATE_READY, true},
		{"ports never listening", "never", "ports", "tcp", allexv1.ProcessState_PROCESS_STATE_FAILED, false},
		{"none", "never", "none", "tcp", allexv1.ProcessState_PROCESS_STATE_READY, false},
		{"library automatic", modeLib, "sdk", "tcp,http,ws", allexv1.ProcessState_PROCESS_STATE_READY, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			inst := fmt.Sprintf("r%d", i)
			flags := []string{"-readiness", tt.readiness, "-restart", "never", "-start-timeout", "4s", "-stop-timeout", "5s"}
			if tt.protocols != "" {
				flags = append(flags, "-protocols", tt.protocols)
			}
			m.StartHelper(t, inst, tt.mode, flags...)
			info := waitState(t, m, inst, tt.want)
			switch tt.want {
			case allexv1.ProcessState_PROCESS_STATE_READY:
				if tt.listening {
					for _, p := range info.GetPorts() {
						c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.GetPort()), 10*time.Second)
						if err != nil {
							t.Errorf("ready but %s port %d refuses: %v", p.GetProtocol(), p.GetPort(), err)
							continue
						}
						c.Close()
					}
				}
				e2e.MustCtl(t, m.Socket, "stop", "-rm", inst)
			case allexv1.ProcessState_PROCESS_STATE_FAILED:
				if !strings.Contains(info.GetLastError(), "not ready within 4s") {
					t.Errorf("last error = %q, want the start timeout", info.GetLastError())
				}
				ev.wait(t, func(e *allexv1.Event) bool {
					return e.GetInstance() == inst && e.GetKind() == allexv1.EventKind_EVENT_KIND_FAILED
				})
				ev.wait(t, func(e *allexv1.Event) bool {
					return e.GetInstance() == inst && e.GetKind() == allexv1.EventKind_EVENT_KIND_EXITED &&
						strings.Contains(e.GetMessage(), "not ready within 4s")
				})
				if len(info.GetPorts()) == 0 {
					break
				}
				// The failed child's ports are free again: nobody listens
				// and the master would hand them out anew.
				for _, p := range info.GetPorts() {
					ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p.GetPort()))
					if err != nil {
						t.Errorf("%s port %d still taken after the failure: %v", p.GetProtocol(), p.GetPort(), err)
						continue
					}
					ln.Close()
				}
				if pid := helperPID(t, m, inst); processAlive(pid) {
					t.Errorf("child %d still alive after the failure", pid)
				}
			}
		})
	}
}
