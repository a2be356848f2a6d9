//go:build !windows

package children

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/child/mastertest"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// TestStopWithoutProcessSocket: a child that never registered a Process
// socket is stopped with SIGTERM, and a library child that did is stopped
// through Process.Shutdown, under the same master.
func TestStopWithoutProcessSocket(t *testing.T) {
	t.Parallel()
	m := e2e.StartMaster(t, 10, "")
	m.StartHelper(t, "plain", "listen", "-protocols", "tcp", "-stop-timeout", "20s")
	m.StartHelper(t, "lib", modeLib, "-protocols", "tcp", "-readiness", "sdk", "-stop-timeout", "20s")
	waitState(t, m, "plain", allexv1.ProcessState_PROCESS_STATE_READY)
	waitState(t, m, "lib", allexv1.ProcessState_PROCESS_STATE_READY)
	if ps := psEntry(t, m, "plain"); ps["registered"] == true || ps["process_socket"] != nil {
		t.Errorf("plain child: registered=%v process_socket=%v, want neither", ps["registered"], ps["process_socket"])
	}
	if ps := psEntry(t, m, "lib"); ps["registered"] != true || ps["process_socket"] == nil {
		t.Errorf("lib child: registered=%v process_socket=%v, want both", ps["registered"], ps["process_socket"])
	}

	tests := []struct {
		instance, wantLog string
		// signalled: the master says it fell back to signals.
		signalled bool
	}{
		{"plain", "got SIGTERM", true},
		{"lib", "lib-exit shutdown-rpc grace=20s", false},
	}
	for _, tt := range tests {
		t.Run(tt.instance, func(t *testing.T) {
			pid := helperPID(t, m, tt.instance)
			e2e.MustCtl(t, m.Socket, "stop", tt.instance)
			info := getProcess(t, m, tt.instance)
			if info.GetState() != allexv1.ProcessState_PROCESS_STATE_EXITED || info.GetExitCode() != 0 || info.GetExitSignal() != "" {
				t.Errorf("after stop: state %s code %d signal %q; want a clean exit 0", info.GetState(), info.GetExitCode(), info.GetExitSignal())
			}
			waitLogs(t, m, tt.instance, tt.wantLog)
			signalled := strings.Contains(m.Output(), "allexmaster."+tt.instance+": no shutdown hook for this child, signalling")
			if signalled != tt.signalled {
				t.Errorf("master log says signalled=%v, want %v:\n%s", signalled, tt.signalled, m.Output())
			}
			if processAlive(pid) {
				t.Errorf("child %d still alive", pid)
			}
		})
	}
	noFile(t, "/tmp/allexprocess."+strconv.Itoa(helperPID(t, m, "lib")))
}

// TestExitBeforeReady: a child that exits with code 3 before its ports
// accept connections fails (restart never), its ports are released and the
// failure is reported in ps and in the events.
func TestExitBeforeReady(t *testing.T) {
	t.Parallel()
	m := e2e.StartMaster(t, 10, "")
	ev := watchEvents(t, m)
	m.StartHelper(t, "quitter", "exit", "-env", "ALLEX_TEST_CODE=3", "-protocols", "tcp,http",
		"-readiness", "ports", "-restart", "never")
	info := waitState(t, m, "quitter", allexv1.ProcessState_PROCESS_STATE_FAILED)
	const wantErr = "exited before ready (exited with code 3)"
	if !strings.Contains(info.GetLastError(), wantErr) || info.GetExitCode() != 3 {
		t.Errorf("last error %q code %d, want %q and 3", info.GetLastError(), info.GetExitCode(), wantErr)
	}
	if ps := psEntry(t, m, "quitter"); !strings.Contains(fmt.Sprint(ps["last_error"]), wantErr) || ps["state"] != "PROCESS_STATE_FAILED" {
		t.Errorf("ps -o json: state %v last_error %v", ps["state"], ps["last_error"])
	}
	exited := ev.wait(t, func(e *allexv1.Event) bool {
		return e.GetInstance() == "quitter" && e.GetKind() == allexv1.EventKind_EVENT_KIND_EXITED
	})
	if exited.GetExitCode() != 3 || exited.GetMessage() != wantErr {
		t.Errorf("exited event: code %d message %q", exited.GetExitCode(), exited.GetMessage())
	}
	ev.wait(t, func(e *allexv1.Event) bool {
		return e.GetInstance() == "quitter" && e.GetKind() == allexv1.EventKind_EVENT_KIND_FAILED
	})
	for _, e := range ev.of("quitter") {
		if e.GetKind() == allexv1.EventKind_EVENT_KIND_READY {
			t.Errorf("events report the quitter ready: %s", kinds(ev.of("quitter")))
		}
	}
	// The state turns failed just before the supervisor hands the ports
	// back.
	e2e.Eventually(t, stateTimeout, func() error {
		if n := m.PortsInUse(t); n != 0 {
			return fmt.Errorf("%d ports still in use after the failure", n)
		}
		return nil
	})
	// The released ports are the first ones handed out again.
	m.StartHelper(t, "next", "listen", "-protocols", "tcp,http")
	next := waitState(t, m, "next", allexv1.ProcessState_PROCESS_STATE_READY)
	if p := next.GetPorts(); len(p) != 2 || p[0].GetPort() != uint32(m.TCP) || p[1].GetPort() != uint32(m.HTTP) {
		t.Errorf("next child's ports %v, want tcp %d http %d", p, m.TCP, m.HTTP)
	}
}

// TestStaleProcessSocket: the child finds a socket file nobody answers on
// at its own /tmp/allexprocess.<pid> (left by a dead process with the same
// pid), replaces it, registers and is stopped through it.
func TestStaleProcessSocket(t *testing.T) {
	t.Parallel()
	m := e2e.StartMaster(t, 10, "")
	m.StartHelper(t, "phoenix", modeLib, "-env", envStale+"=1", "-protocols", "tcp", "-readiness", "sdk")
	info := waitState(t, m, "phoenix", allexv1.ProcessState_PROCESS_STATE_READY)
	res := libResultOf(t, m, "phoenix")
	sock := "/tmp/allexprocess." + strconv.Itoa(res.PID)
	t.Cleanup(func() { _ = os.Remove(sock) })
	if !res.StaleCreated || res.Socket != sock || res.PID != int(info.GetPid()) {
		t.Fatalf("child result %+v, want a stale socket created at %s by pid %d", res, sock, info.GetPid())
	}
	waitLogs(t, m, "phoenix", "stale socket left at "+sock)
	if ps := psEntry(t, m, "phoenix"); ps["registered"] != true || ps["process_socket"] != sock {
		t.Errorf("ps: registered=%v process_socket=%v, want true and %s", ps["registered"], ps["process_socket"], sock)
	}
	// The path now answers allex.v1.Process for the live child.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pinfo, err := mastertest.DialProcess(t, sock).Info(ctx, &allexv1.InfoRequest{})
	if err != nil || pinfo.GetPid() != int32(res.PID) || pinfo.GetInstance() != "phoenix" {
		t.Fatalf("Process.Info on %s = %v, %v", sock, pinfo, err)
	}
	e2e.MustCtl(t, m.Socket, "stop", "phoenix")
	waitLogs(t, m, "phoenix", "lib-exit shutdown-rpc")
	noFile(t, sock)
}

// TestLibraryPortQueries: through the child library a child learns its own
// ports, gets an extra port (listed by allexctl ports as extra) and looks
// up another local instance's ports.
func TestLibraryPortQueries(t *testing.T) {
	t.Parallel()
	m := e2e.StartMaster(t, 10, "")
	m.StartHelper(t, "peer", "listen", "-protocols", "http,ws")
	peer := waitState(t, m, "peer", allexv1.ProcessState_PROCESS_STATE_READY)
	m.StartHelper(t, "asker", modeLib, "-env", envAlloc+"=1", "-env", envPeer+"=peer", "-protocols", "tcp,http", "-readiness", "sdk")
	asker := waitState(t, m, "asker", allexv1.ProcessState_PROCESS_STATE_READY)
	res := libResultOf(t, m, "asker")

	wantOwn := map[string]uint16{"tcp": uint16(m.TCP), "http": uint16(m.HTTP + 1)}
	if fmt.Sprint(res.Own) != fmt.Sprint(wantOwn) {
		t.Errorf("own ports %v, want %v", res.Own, wantOwn)
	}
	wantSelf := fmt.Sprint(map[string][]portJS{"asker": {
		{Protocol: "PROTOCOL_TCP", Port: uint32(m.TCP)}, {Protocol: "PROTOCOL_HTTP", Port: uint32(m.HTTP + 1)}}})
	if got := fmt.Sprint(res.LookupSelf); got != wantSelf {
		t.Errorf("LookupPorts of itself = %s, want %s", got, wantSelf)
	}
	if res.Extra != uint16(m.TCP+1) {
		t.Errorf("extra port %d, want the next free tcp port %d", res.Extra, m.TCP+1)
	}
	var peerPorts []portJS
	for _, p := range peer.GetPorts() {
		peerPorts = append(peerPorts, portJS{Protocol: p.GetProtocol().String(), Port: p.GetPort()})
	}
	if got, want := fmt.Sprint(res.Peer), fmt.Sprint(map[string][]portJS{"peer": peerPorts}); got != want {
		t.Errorf("LookupPorts of peer = %s, want %s", got, want)
	}

	// allexctl and the master's process view list the extra port.
	extraRow := false
	for _, l := range e2e.Lines(e2e.MustCtl(t, m.Socket, "ports", "asker")) {
		f := strings.Fields(l)
		if len(f) == 5 && f[0] == "asker" && f[2] == "tcp" && f[3] == strconv.Itoa(m.TCP+1) && f[4] == "true" {
			extraRow = true
		}
	}
	if !extraRow {
		t.Errorf("allexctl ports lacks the extra tcp port %d:\n%s", m.TCP+1, e2e.MustCtl(t, m.Socket, "ports", "asker"))
	}
	if got := getProcess(t, m, "asker").GetPorts(); len(got) != 3 || !got[2].GetExtra() || len(asker.GetPorts()) < 2 {
		t.Errorf("process ports %v, want two assigned and one extra", got)
	}
	before := m.PortsInUse(t)
	e2e.MustCtl(t, m.Socket, "stop", "asker")
	waitLogs(t, m, "asker", "lib-exit shutdown-rpc")
	// The extra port goes back with the assigned ones.
	if after := m.PortsInUse(t); after != before-3 {
		t.Errorf("ports in use: %d before the stop, %d after; want 3 released", before, after)
	}
}

// libResultOf parses the "lib-result" line a modeLib child printed.
func libResultOf(t *testing.T, m *e2e.Master, instance string) libResult {
	t.Helper()
	var res libResult
	line := logLine(t, m, instance, "lib-result ")
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("lib-result %q: %v", line, err)
	}
	return res
}

// TestCtlRelativeSocket: allexctl reaches the master through a socket path
// relative to its working directory.
func TestCtlRelativeSocket(t *testing.T) {
	t.Parallel()
	m := e2e.StartMaster(t, 10, "")
	cmd := exec.Command(e2e.Bins.Ctl, "-socket", filepath.Base(m.Socket), "status")
	cmd.Dir = filepath.Dir(m.Socket)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("allexctl -socket %s status: %v\n%s", filepath.Base(m.Socket), err, out)
	}
}

// TestLibraryStopFallbacks: when Process.Shutdown cannot reach a registered
// child the master signals it; when the child ignores the request it is
// killed after the stop timeout; a restart stops the old run through its
// socket and the new run registers afresh.
func TestLibraryStopFallbacks(t *testing.T) {
	t.Parallel()
	m := e2e.StartMaster(t, 10, "")
	tests := []struct {
		name, instance, env string
		// wantLog is what the child printed on its way out; wantSignal
		// how it ended.
		wantLog, wantSignal string
		// hookFailed: the master logs that Shutdown failed and it
		// signalled instead.
		hookFailed bool
	}{
		{"socket gone", "unlinked", envUnlink + "=1", "lib-exit signal", "", true},
		{"stubborn", "stubborn", envStubborn + "=1", "lib ignores the stop", "SIGKILL", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m.StartHelper(t, tt.instance, modeLib, "-env", tt.env, "-protocols", "tcp", "-readiness", "sdk", "-stop-timeout", "3s")
			waitState(t, m, tt.instance, allexv1.ProcessState_PROCESS_STATE_READY)
			res := libResultOf(t, m, tt.instance)
			t.Cleanup(func() { _ = os.Remove(res.Socket) })
			if tt.env == envUnlink+"=1" {
				waitLogs(t, m, tt.instance, "lib unlinked its process socket")
			}
			e2e.MustCtl(t, m.Socket, "stop", tt.instance)
			info := getProcess(t, m, tt.instance)
			if info.GetState() != allexv1.ProcessState_PROCESS_STATE_EXITED || info.GetExitSignal() != tt.wantSignal {
				t.Errorf("after stop: state %s code %d signal %q, want exited with signal %q", info.GetState(), info.GetExitCode(), info.GetExitSignal(), tt.wantSignal)
			}
			waitLogs(t, m, tt.instance, tt.wantLog)
			if failed := strings.Contains(m.Output(), "allexmaster."+tt.instance+": shutdown hook failed, signalling"); failed != tt.hookFailed {
				t.Errorf("master log says the shutdown hook failed=%v, want %v:\n%s", failed, tt.hookFailed, m.Output())
			}
			if processAlive(res.PID) {
				t.Errorf("child %d still alive", res.PID)
			}
			// A SIGKILLed child cannot remove its socket; the master does.
			noFile(t, res.Socket)
		})
	}
	t.Run("restart", func(t *testing.T) {
		t.Parallel()
		m.StartHelper(t, "again", modeLib, "-protocols", "tcp", "-readiness", "sdk")
		waitState(t, m, "again", allexv1.ProcessState_PROCESS_STATE_READY)
		first := libResultOf(t, m, "again")
		e2e.MustCtl(t, m.Socket, "restart", "again")
		var ps map[string]any
		e2e.Eventually(t, stateTimeout, func() error {
			ps = psEntry(t, m, "again")
			if ps["state"] != "PROCESS_STATE_READY" || ps["pid"] == float64(first.PID) || ps["registered"] != true {
				return fmt.Errorf("after restart: %v", ps)
			}
			return nil
		})
		pid := int(ps["pid"].(float64))
		if want := "/tmp/allexprocess." + strconv.Itoa(pid); ps["process_socket"] != want {
			t.Errorf("process_socket %v, want the new run's %s", ps["process_socket"], want)
		}
		waitLogs(t, m, "again", "lib-exit shutdown-rpc")
		noFile(t, first.Socket)
		if processAlive(first.PID) {
			t.Errorf("first run %d still alive", first.PID)
		}
	})
}
