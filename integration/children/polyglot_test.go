//go:build !windows

package children

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// TestNodeChild runs examples/nodechild (grpc-js over the machine socket)
// under the real master: it registers with node's own pid, reports ready,
// serves HTTP and is stopped through its Process socket.
func TestNodeChild(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(repoRoot(t), "examples", "nodechild")
	e2e.EnsureNodeModules(t, dir)
	m := e2e.StartMaster(t, 10, "")
	e2e.MustCtl(t, m.Socket, "start", "-protocols", "http", "-readiness", "sdk", "-restart", "never",
		"-stop-timeout", "15s", "-start-timeout", "2m", "-dir", dir, "node1", "--", "node", "index.js")
	info := waitState(t, m, "node1", allexv1.ProcessState_PROCESS_STATE_READY)
	pid := int(info.GetPid())
	sock := "/tmp/allexprocess." + strconv.Itoa(pid)
	t.Cleanup(func() { _ = os.Remove(sock) })
	// The master only accepts a process socket named after the caller's
	// kernel-reported pid, so this proves node itself registered.
	if ps := psEntry(t, m, "node1"); ps["registered"] != true || ps["process_socket"] != sock {
		t.Fatalf("ps: registered=%v process_socket=%v, want true and %s", ps["registered"], ps["process_socket"], sock)
	}
	httpPort := info.GetPorts()[0].GetPort()
	waitLogs(t, m, "node1", "nodechild: registered as node1",
		fmt.Sprintf("nodechild: ports of node1: PROTOCOL_HTTP=%d", httpPort), "nodechild: ready")
	checkHTTP(t, httpPort, "hello from node node1\n")

	e2e.MustCtl(t, m.Socket, "stop", "node1")
	after := getProcess(t, m, "node1")
	if after.GetState() != allexv1.ProcessState_PROCESS_STATE_EXITED || after.GetExitCode() != 0 || after.GetExitSignal() != "" {
		t.Errorf("after stop: state %s code %d signal %q; want a clean exit 0", after.GetState(), after.GetExitCode(), after.GetExitSignal())
	}
	waitLogs(t, m, "node1", "nodechild: Process.Shutdown: shutting down")
	if strings.Contains(m.Output(), "allexmaster.node1: no shutdown hook") || strings.Contains(m.Output(), "shutdown hook failed") {
		t.Errorf("master signalled node instead of using Process.Shutdown:\n%s", m.Output())
	}
	noFile(t, sock)
	if processAlive(pid) {
		t.Errorf("node %d still alive", pid)
	}
}

// TestThirdPartySnippet starts the master with the modules and run entries
// of examples/thirdparty/allexmasterconfig.snippet.json: python3's
// http.server, unmodified, gets its port through arg templating, is ready
// by readiness "ports" and is stopped with SIGTERM.
func TestThirdPartySnippet(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed; skipping the third-party example")
	}
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "thirdparty", "allexmasterconfig.snippet.json"))
	if err != nil {
		t.Fatal(err)
	}
	var snippet struct {
		Modules json.RawMessage `json:"modules"`
		Run     json.RawMessage `json:"run"`
	}
	if err := json.Unmarshal(b, &snippet); err != nil {
		t.Fatalf("snippet: %v", err)
	}
	m := e2e.StartMaster(t, 10, fmt.Sprintf(`,"modules":%s,"run":%s`, snippet.Modules, snippet.Run))
	info := waitState(t, m, "pyhttp1", allexv1.ProcessState_PROCESS_STATE_READY)
	if info.GetModule() != "pyhttp" || len(info.GetPorts()) != 1 || info.GetPorts()[0].GetPort() != uint32(m.HTTP) {
		t.Fatalf("pyhttp1: module %s ports %v, want pyhttp on http %d", info.GetModule(), info.GetPorts(), m.HTTP)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", m.HTTP))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The master's dir holds its config; http.server lists it.
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "allexmasterconfig.json") {
		t.Errorf("GET / = %d %q", resp.StatusCode, body)
	}
	if ps := psEntry(t, m, "pyhttp1"); ps["registered"] == true {
		t.Error("python registered with the master?")
	}
	pid := int(info.GetPid())
	e2e.MustCtl(t, m.Socket, "stop", "pyhttp1")
	after := getProcess(t, m, "pyhttp1")
	if after.GetState() != allexv1.ProcessState_PROCESS_STATE_EXITED || after.GetExitSignal() != "SIGTERM" {
		t.Errorf("after stop: state %s code %d signal %q; want exited by SIGTERM", after.GetState(), after.GetExitCode(), after.GetExitSignal())
	}
	if !strings.Contains(m.Output(), "allexmaster.pyhttp1: no shutdown hook for this child, signalling") {
		t.Errorf("master did not say it signalled:\n%s", m.Output())
	}
	if processAlive(pid) {
		t.Errorf("python %d still alive", pid)
	}
}
