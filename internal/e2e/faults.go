//go:build !windows

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/procfs"
	"github.com/allex-go/allex/lanmanager/adminclient"
)

// FaultLAN is a running allexlanmanager on loopback.
type FaultLAN struct {
	*Proc
	Port    int
	Token   string
	DataDir string
	Admin   *adminclient.Client
}

// StartFaultLAN runs allexlanmanager on 127.0.0.1:port (0 picks a free port)
// with data in dataDir, heartbeat 200ms and grace 2s unless extra flags
// override them (later flags win), and waits until it answers.
func StartFaultLAN(t testing.TB, dataDir string, port int, token string, extra ...string) *FaultLAN {
	t.Helper()
	if port == 0 {
		port = FreeBlock(t, 1)
	}
	args := []string{"-addr", "127.0.0.1:" + strconv.Itoa(port), "-data", dataDir, "-token", token,
		"-heartbeat", "200ms", "-grace", "2s"}
	l := &FaultLAN{Port: port, Token: token, DataDir: dataDir}
	l.Proc = Start(t, dataDir, Bins.LAN, append(args, extra...)...)
	l.Admin = adminclient.New(l.URL(), token)
	l.Admin.HTTP = &http.Client{Timeout: 30 * time.Second}
	Eventually(t, 30*time.Second, func() error {
		select {
		case <-l.Proc.done:
			return fmt.Errorf("allexlanmanager exited (%v):\n%s", l.Proc.err, l.Output())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := l.Admin.Needs(ctx)
		return err
	})
	return l
}

// URL is the LAN manager's base URL.
func (l *FaultLAN) URL() string { return "http://127.0.0.1:" + strconv.Itoa(l.Port) }

// FaultKill9 SIGKILLs the process alone (not its process group, so children
// in their own groups survive as a crashed daemon would leave them) and
// waits for it to be gone.
func FaultKill9(t testing.TB, p *Proc) {
	t.Helper()
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s survived SIGKILL", p.Cmd.Path)
	}
}

// FaultMaster is an allexmaster linked to a LAN manager, running the demo
// module (allexmaster demochild: TCP echo, readiness ports).
type FaultMaster struct {
	*Proc
	ID, Dir, Socket string
	// TCP ports are Base..Base+Size-1.
	Base, Size int
}

// FaultMasterConfig is an allexmasterconfig.json for machine id linked to
// the LAN manager on 127.0.0.1:lanPort, with size ports per protocol from
// base, at most maxProcs children (0: no limit).
func FaultMasterConfig(dir, id string, lanPort int, token string, base, size, maxProcs int) string {
	cfg := map[string]any{
		"lanmanageraddress": "127.0.0.1",
		"lanmanagerport":    lanPort,
		"token":             token,
		"machineid":         id,
		"address":           "127.0.0.1",
		"portrangestart":    map[string]int{"tcp": base, "http": base + size, "ws": base + 2*size},
		"portrangesize":     size,
		"socket":            filepath.Join(dir, "m.sock"),
		"statedir":          filepath.Join(dir, "state"),
		"modules": map[string]any{"demo": map[string]any{
			"command": Bins.Master, "args": []string{"demochild"}, "protocols": []string{"tcp"},
			"readiness": "ports", "stoptimeout": "2s",
		}},
	}
	if maxProcs > 0 {
		cfg["maxprocesses"] = maxProcs
	}
	b, _ := json.Marshal(cfg)
	return string(b)
}

// StartFaultMaster starts a master with machine id in a fresh dir with a
// free port block of size per protocol.
func StartFaultMaster(t testing.TB, lan *FaultLAN, id string, size, maxProcs int) *FaultMaster {
	t.Helper()
	dir := ShortDir(t)
	base := FreeBlock(t, 3*size)
	WriteFile(t, dir, "allexmasterconfig.json", FaultMasterConfig(dir, id, lan.Port, lan.Token, base, size, maxProcs))
	m := &FaultMaster{ID: id, Dir: dir, Socket: filepath.Join(dir, "m.sock"), Base: base, Size: size}
	m.Run(t)
	return m
}

// Run starts (or starts again, after a crash) the master in its dir.
func (m *FaultMaster) Run(t testing.TB) {
	t.Helper()
	m.Proc = Start(t, m.Dir, Bins.Master)
	m.WaitOutput("allexmaster running", 60*time.Second)
}

// FaultPS is one line of `allexctl -o json ps`.
type FaultPS struct {
	Instance string `json:"instance"`
	Pid      int    `json:"pid"`
	State    string `json:"state"`
	NeedID   string `json:"need_id"`
	Ports    []struct {
		Protocol string `json:"protocol"`
		Port     int    `json:"port"`
	} `json:"ports"`
}

// Live reports whether the child is up (not exited or failed).
func (e FaultPS) Live() bool {
	switch e.State {
	case "PROCESS_STATE_EXITED", "PROCESS_STATE_FAILED":
		return false
	}
	return e.Pid > 0
}

// PS lists the master's children.
func FaultPSList(t testing.TB, socket string) ([]FaultPS, error) {
	t.Helper()
	out, errOut, err := Ctl(t, socket, "-o", "json", "ps")
	if err != nil {
		return nil, fmt.Errorf("allexctl ps: %w: %s", err, errOut)
	}
	var resp struct {
		Processes []FaultPS `json:"processes"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		return nil, fmt.Errorf("ps -o json: %w\n%s", err, out)
	}
	return resp.Processes, nil
}

// FaultLinkState is the master's LAN link state from `allexctl -o json status`
// ("connected", "connecting", "disconnected").
func FaultLinkState(t testing.TB, socket string) (string, error) {
	t.Helper()
	out, errOut, err := Ctl(t, socket, "-o", "json", "status")
	if err != nil {
		return "", fmt.Errorf("allexctl status: %w: %s", err, errOut)
	}
	var st struct {
		State string `json:"lan_link_state"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return "", fmt.Errorf("status -o json: %w\n%s", err, out)
	}
	return st.State, nil
}

// FaultPIDAlive reports whether pid names a running (not zombie) process.
func FaultPIDAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	st, err := procfs.ReadStat(pid)
	return err == nil && st.Live()
}

// FaultPortAccepts reports whether 127.0.0.1:port accepts a TCP connection.
func FaultPortAccepts(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// FaultOrphans remembers child pids a test saw, and at cleanup kills the
// process groups of those still running a demo child, so a failing fault
// test (a master killed with SIGKILL) never leaves orphans behind.
type FaultOrphans struct {
	mu   sync.Mutex
	pids map[int]bool
}

// NewFaultOrphans returns a tracker cleaned up with t.
func NewFaultOrphans(t testing.TB) *FaultOrphans {
	o := &FaultOrphans{pids: map[int]bool{}}
	t.Cleanup(func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		for pid := range o.pids {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			if err == nil && strings.Contains(string(b), "demochild") {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return o
}

// Add records pids.
func (o *FaultOrphans) Add(pids ...int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range pids {
		if p > 0 {
			o.pids[p] = true
		}
	}
}

// FaultPortsInUse is the master's count of held ports per protocol
// ("PROTOCOL_TCP", ...) from `allexctl -o json status`.
func FaultPortsInUse(t testing.TB, socket string) (map[string]int, error) {
	t.Helper()
	out, errOut, err := Ctl(t, socket, "-o", "json", "status")
	if err != nil {
		return nil, fmt.Errorf("allexctl status: %w: %s", err, errOut)
	}
	var st struct {
		Ranges []struct {
			Protocol string `json:"protocol"`
			InUse    int    `json:"in_use"`
		} `json:"port_ranges"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status -o json: %w\n%s", err, out)
	}
	use := map[string]int{}
	for _, r := range st.Ranges {
		use[r.Protocol] = r.InUse
	}
	return use, nil
}

// FaultProcsOf lists the live processes started for the master on socket:
// those whose environment has ALLEX_MASTER_SOCKET=socket, whoever their
// parent is now, so orphans of a crashed master are found too.
func FaultProcsOf(socket string) []int {
	want := "\x00ALLEX_MASTER_SOCKET=" + socket + "\x00"
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !FaultPIDAlive(pid) {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		if strings.Contains("\x00"+string(env), want) {
			out = append(out, pid)
		}
	}
	return out
}
