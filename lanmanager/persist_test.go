package lanmanager_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
	"github.com/gorilla/websocket"
)

func TestRestartKeepsState(t *testing.T) {
	cfg := testConfig()
	cfg.DataDir = t.TempDir()
	e1 := start(t, cfg)
	e1.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"), tcpNeed("w3", "web"))
	m1 := e1.connect(t, hello("m1", "web"))
	m2 := e1.connect(t, hello("m2", "web"))
	rec1 := m1.publish("w1")
	m2.publish("w2")
	m1.claim("w3")
	e1.stop()
	m1.expectClosed()
	m2.expectClosed()

	cfg.Grace = 3 * time.Second
	e2 := start(t, cfg)
	needs := e2.srv.Needs()
	var states []string
	for _, n := range needs {
		states = append(states, n.Need.Instance+"="+n.State)
	}
	if want := []string{"w1=satisfied", "w2=satisfied", "w3=pending"}; !reflect.DeepEqual(states, want) {
		t.Fatalf("after restart needs = %v, want %v", states, want)
	}
	h := hello("m1", "web")
	h.Running = []lanwire.RunningService{{Instance: "w1", Module: "web", PID: rec1.PID, Ports: rec1.Ports, StartedAt: rec1.StartedAt}}
	m1 = e2.connect(t, h)
	m1.expectNeeds("w3")
	if _, err := lanmanager.New(cfg); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second LAN manager on the same data dir: %v, want locked error", err)
	}
	// m2 never comes back: w2 goes down after grace, w1 stays.
	eventually(t, "w2 down after grace", func() bool {
		st, _, _ := needState(e2, "w2")
		return st == adminapi.StatePending
	})
	m1.expectNeeds("w2", "w3")
	svcs := e2.srv.Services(lanmanager.ServiceFilter{})
	if len(svcs) != 1 || svcs[0].Instance != "w1" || !svcs[0].PublishedAt.Equal(rec1.PublishedAt) {
		t.Fatalf("services = %+v", svcs)
	}
}

func TestSilentMasterDropped(t *testing.T) {
	cfg := testConfig()
	cfg.Heartbeat = 200 * time.Millisecond
	e := start(t, cfg)
	e.addNeeds(tcpNeed("w1", "web"))
	conn, _, err := e.dial(testToken)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b, _ := lanwire.Encode(lanwire.TypeHello, &lanwire.Hello{MachineID: "m1", Address: "127.0.0.1", Modules: []string{"web"}})
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
	b, _ = lanwire.Encode(lanwire.TypeClaim, &lanwire.Claim{Instance: "w1"})
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "granted", func() bool { st, _, _ := needState(e, "w1"); return st == adminapi.StateGranted })
	// Never reading means never answering pings: dropped, grant revoked.
	eventually(t, "silent master dropped", func() bool {
		ms := e.srv.Machines()
		st, _, _ := needState(e, "w1")
		return len(ms) == 1 && !ms[0].Connected && st == adminapi.StatePending
	})
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseNeedsFile(t *testing.T) {
	tests := []struct {
		name, in, err string
		n             int
	}{
		{"ok", `{"needs":[{"instance":"a","module":"m"},{"instance":"b","module":"m","protocols":["tcp"]}]}`, "", 2},
		{"empty list", `{"needs":[]}`, "", 0},
		{"missing needs", `{}`, "missing", 0},
		{"unknown top field", `{"needs":[],"extra":1}`, `unknown field "extra"`, 0},
		{"unknown need field", `{"needs":[{"instance":"a","module":"m","color":"red"}]}`, `needs[0] (instance "a"): need: json: unknown field "color"`, 0},
		{"invalid need", `{"needs":[{"instance":"a","module":"m"},{"instance":"b","module":"bad module"}]}`, `needs[1] (instance "b")`, 0},
		{"duplicate", `{"needs":[{"instance":"a","module":"m"},{"instance":"a","module":"m"}]}`, "already defined at needs[0]", 0},
		{"trailing", `{"needs":[]} x`, "trailing", 0},
		{"not json", `needs`, "invalid", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			needs, err := lanmanager.ParseNeedsFile("f.json", []byte(tt.in))
			if tt.err == "" {
				if err != nil || len(needs) != tt.n {
					t.Fatalf("got %v, %v", needs, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "f.json") {
				t.Fatalf("err = %v, want it to name f.json and contain %q", err, tt.err)
			}
		})
	}
}

func TestNeedsFilesMerge(t *testing.T) {
	dir := t.TempDir()
	base := writeFile(t, dir, "base.json", `{"needs":[{"instance":"x","module":"web"},{"instance":"y","module":"web"},{"instance":"z","module":"web"}]}`)
	over := writeFile(t, dir, "over.json", `{"needs":[{"instance":"y","module":"db"}]}`)
	cfg := testConfig()
	cfg.DataDir = t.TempDir()
	cfg.NeedsFiles = []string{base, over}
	e := start(t, cfg)
	e.addNeeds(tcpNeed("api1", "web"))
	got := map[string]adminapi.NeedStatus{}
	for _, n := range e.srv.Needs() {
		got[n.Need.Instance] = n
	}
	if len(got) != 4 || got["y"].Need.Module != "db" || got["y"].Origin != "file:"+over || got["x"].Origin != "file:"+base || got["api1"].Origin != "api" {
		t.Fatalf("needs = %+v", got)
	}
	m := e.connect(t, hello("m1", "web"))
	m.expectNeeds("api1", "x", "z")
	m.publish("z")
	e.stop()

	// x is changed, y and z dropped from the files: y (pending) and z
	// (running) are removed, x updated, the API need kept.
	base = writeFile(t, dir, "base.json", `{"needs":[{"instance":"x","module":"web","properties":{"v":"2"}}]}`)
	cfg.NeedsFiles = []string{base}
	e = start(t, cfg)
	var names []string
	for _, n := range e.srv.Needs() {
		names = append(names, n.Need.Instance)
		if n.Need.Instance == "x" && n.Need.Properties["v"] != "2" {
			t.Errorf("x not updated: %+v", n)
		}
	}
	if !reflect.DeepEqual(names, []string{"api1", "x"}) {
		t.Fatalf("needs = %v", names)
	}
	e.stop()

	// A bad file fails startup and leaves the store alone.
	bad := writeFile(t, dir, "bad.json", `{"needs":[{"instance":"q","module":"web","nope":1}]}`)
	cfg.NeedsFiles = []string{base, bad}
	if _, err := lanmanager.New(cfg); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("New with bad file: %v", err)
	}
	cfg.NeedsFiles = []string{filepath.Join(dir, "missing.json")}
	if _, err := lanmanager.New(cfg); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("New with missing file: %v", err)
	}
	cfg.NeedsFiles = []string{base}
	e = start(t, cfg)
	if n := e.srv.Needs(); len(n) != 2 {
		t.Fatalf("needs after refused start = %+v", n)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*lanmanager.Config)
		err  string
	}{
		{"no token", func(c *lanmanager.Config) { c.Token = "" }, "token"},
		{"bad addr", func(c *lanmanager.Config) { c.Addr = "nope" }, "addr"},
		{"no store", func(c *lanmanager.Config) { c.DataDir = "" }, "DataDir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.DataDir = t.TempDir()
			tt.mod(&cfg)
			if _, err := lanmanager.New(cfg); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func FuzzNeedsFile(f *testing.F) {
	f.Add([]byte(`{"needs":[{"instance":"a","module":"m","protocols":["tcp"],"fixedports":{"tcp":80},"machine":{"address":"10.0.0.0/8"}}]}`))
	f.Add([]byte(`{"needs":[]}`))
	f.Add([]byte(`{"needs":[{"instance":"a","module":"m"},{"instance":"a","module":"m"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		needs, err := lanmanager.ParseNeedsFile("fuzz.json", b)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, n := range needs {
			if err := n.Validate(); err != nil {
				t.Fatalf("accepted invalid need: %v", err)
			}
			if seen[n.Instance] {
				t.Fatalf("accepted duplicate %q", n.Instance)
			}
			seen[n.Instance] = true
		}
	})
}
