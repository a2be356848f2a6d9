//go:build !windows

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// Master is a running allexmaster without a LAN manager, with its own
// socket, state dir and a free port block of size 10 per protocol.
type Master struct {
	*Proc
	Dir, Socket   string
	TCP, HTTP, WS int
}

// MasterConfig is an allexmasterconfig.json without a LAN manager, with
// ports from base, size per protocol, and socket and state dir in dir.
func MasterConfig(dir string, base, size int, extra string) string {
	return fmt.Sprintf(`{"lanmanageraddress":"","portrangestart":{"tcp":%d,"http":%d,"ws":%d},"portrangesize":%d,"socket":%q,"statedir":%q%s}`,
		base, base+size, base+2*size, size, filepath.Join(dir, "m.sock"), filepath.Join(dir, "state"), extra)
}

// StartMaster starts allexmaster in a fresh dir with free port ranges.
func StartMaster(t testing.TB, size int, extra string) *Master {
	t.Helper()
	dir := ShortDir(t)
	base := FreeBlock(t, 3*size)
	WriteFile(t, dir, "allexmasterconfig.json", MasterConfig(dir, base, size, extra))
	m := &Master{Dir: dir, Socket: filepath.Join(dir, "m.sock"), TCP: base, HTTP: base + size, WS: base + 2*size}
	m.Proc = Start(t, dir, Bins.Master, "-log-level", "debug")
	m.WaitOutput("allexmaster running", 30*time.Second)
	return m
}

// HelperArgs are allexctl start flags making the test binary behave as mode.
func HelperArgs(mode string, extra ...string) []string {
	args := append([]string{"-env", "ALLEX_TEST_HELPER=" + mode}, extra...)
	return args
}

// StartHelper starts the test binary as a child (see HelperMain) through
// allexctl.
func (m *Master) StartHelper(t testing.TB, instance, mode string, flags ...string) string {
	t.Helper()
	args := append([]string{"start"}, HelperArgs(mode, flags...)...)
	args = append(args, instance, "--", os.Args[0])
	return MustCtl(t, m.Socket, args...)
}

// Process returns the master's view of instance, or nil.
func (m *Master) Process(t testing.TB, instance string) *allexv1.ProcessInfo {
	t.Helper()
	out := MustCtl(t, m.Socket, "-o", "json", "ps")
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

// WaitState polls until instance reaches state want.
func (m *Master) WaitState(t testing.TB, instance string, want allexv1.ProcessState) *allexv1.ProcessInfo {
	t.Helper()
	var info *allexv1.ProcessInfo
	Eventually(t, 30*time.Second, func() error {
		info = m.Process(t, instance)
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

// PortsInUse is the number of ports the master holds, over all ranges.
func (m *Master) PortsInUse(t testing.TB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Client(t, m.Socket).Status(ctx, &allexv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range st.GetPortRanges() {
		n += int(r.GetInUse())
	}
	return n
}
