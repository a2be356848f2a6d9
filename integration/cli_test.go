//go:build !windows

package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestVersions: every binary answers -version from its build information
// (the same for the three, never the old "dev"), and allexctl version
// adds the master's, or says why it has none.
func TestVersions(t *testing.T) {
	var v string
	for _, b := range []struct{ name, path string }{
		{"allexmaster", e2e.Bins.Master}, {"allexlanmanager", e2e.Bins.LAN}, {"allexctl", e2e.Bins.Ctl},
	} {
		out, err := exec.Command(b.path, "-version").CombinedOutput()
		name, got, ok := strings.Cut(strings.TrimSpace(string(out)), " ")
		if err != nil || !ok || name != b.name || got == "" || got == "dev" || strings.Contains(got, "\n") {
			t.Fatalf("%s -version: %v %q", b.name, err, out)
		}
		if v != "" && got != v {
			t.Errorf("%s -version %q, others %q", b.name, got, v)
		}
		v = got
	}

	out, errOut, err := e2e.Ctl(t, filepath.Join(t.TempDir(), "none.sock"), "version")
	if err != nil || !strings.Contains(out, "allexctl     "+v) || !strings.Contains(out, "allexmaster  - (no allexmaster is running") {
		t.Errorf("version without a master: %v %q %q", err, out, errOut)
	}
	m := e2e.StartMaster(t, 10, "")
	out = e2e.MustCtl(t, m.Socket, "version")
	if want := "allexmaster  " + v + " (" + m.Socket + ")"; !strings.Contains(out, want) {
		t.Errorf("version with a master:\n%s\nwant %q", out, want)
	}
	if out := e2e.MustCtl(t, m.Socket, "-o", "json", "version"); !strings.Contains(out, `"allexmaster": "`+v+`"`) {
		t.Errorf("version -o json:\n%s", out)
	}
}

// TestConfigProblemsAllReported: the master refuses a config with several
// problems naming each, a port range past 65535 among them.
func TestConfigProblemsAllReported(t *testing.T) {
	dir := e2e.ShortDir(t)
	e2e.WriteFile(t, dir, "allexmasterconfig.json", `{"lanmanageraddress":"","portrangestart":{"ws":65000},"maxprocesses":-1,"machineid":"a b"}`)
	cmd := exec.Command(e2e.Bins.Master, "-socket", filepath.Join(dir, "m.sock"))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("master accepted the config:\n%s", out)
	}
	for _, want := range []string{
		"allexmasterconfig.json: portrangestart.ws: range 65000-65999 (portrangesize 1000) ends past 65535",
		`allexmasterconfig.json: machineid: "a b"`,
		"allexmasterconfig.json: maxprocesses: -1 is negative",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestStartFixedPortNeedsItsProtocol: allexctl start with a fixed port of
// a protocol the process does not get is refused, naming both.
func TestStartFixedPortNeedsItsProtocol(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	_, errOut, err := e2e.Ctl(t, m.Socket, "start", "-fixed", "tcp=9000", "fp", "--", "/bin/sleep", "60")
	if err == nil || !strings.Contains(errOut, `instance fp: fixed tcp port 9000: "tcp" is not one of its protocols (none)`) {
		t.Errorf("start -fixed without -protocols: %v %q", err, errOut)
	}
	_, errOut, err = e2e.Ctl(t, m.Socket, "start", "-protocols", "http", "-fixed", "tcp=9000", "fp", "--", "/bin/sleep", "60")
	if err == nil || !strings.Contains(errOut, `fixed tcp port 9000: "tcp" is not one of its protocols (http)`) {
		t.Errorf("start -fixed of another protocol: %v %q", err, errOut)
	}
	if p := m.Process(t, "fp"); p != nil {
		t.Errorf("fp exists: %v", p)
	}
}

// TestStartRefusesUnknownKinds: a gRPC start with a restart policy or
// readiness no name maps to is refused (it used to run with the default),
// and allexctl refuses ports readiness without protocols with the
// message the master and the config file use.
func TestStartRefusesUnknownKinds(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := e2e.Client(t, m.Socket)
	for _, tt := range []struct {
		spec *allexv1.ModuleSpec
		want string
	}{
		{&allexv1.ModuleSpec{Restart: 7}, "instance k: unknown restart policy 7 (want never, on-failure or always)"},
		{&allexv1.ModuleSpec{Readiness: 7}, "instance k: unknown readiness 7 (want none, ports or sdk)"},
	} {
		s := tt.spec
		s.Module, s.Instance, s.Command = "k", "k", "/bin/sleep"
		if _, err := c.StartProcess(ctx, &allexv1.StartProcessRequest{Spec: s}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("StartProcess(%v) = %v, want InvalidArgument %q", s, err, tt.want)
		}
	}
	_, errOut, err := e2e.Ctl(t, m.Socket, "start", "-readiness", "ports", "k", "--", "/bin/sleep", "60")
	if want := `start: instance k: "ports" needs at least one protocol`; err == nil || !strings.Contains(errOut, want) {
		t.Errorf("start -readiness ports without -protocols: %v %q, want %q", err, errOut, want)
	}
	if p := m.Process(t, "k"); p != nil {
		t.Errorf("k exists: %v", p)
	}
}
