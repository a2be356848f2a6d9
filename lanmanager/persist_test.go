package lanmanager_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
)

// TestRestartKeepsCopies: a LAN manager restarted on the same data dir
// (bbolt) keeps every copy where it was: a machine that held copies gets
// lease + margin from the start to come back, so a granted need of one
// that does not is offered elsewhere only then; a machine that comes back
// in time keeps the copies its hello reports, a starting one (pid 0)
// included; and epochs keep growing across the restart.
func TestRestartKeepsCopies(t *testing.T) {
	cfg := fenceConfig()
	cfg.DataDir = t.TempDir()
	e1 := start(t, cfg)
	e1.addNeeds(tcpNeed("g1", "web"), tcpNeed("g2", "web"), tcpNeed("p1", "web"), tcpNeed("tmp", "web"), tcpNeed("free", "web"))
	m1 := e1.connect(t, hello("m1", "web"))
	m3 := e1.connect(t, hello("m3", "web"))
	m1.pinging(cfg.Heartbeat)
	m3.pinging(cfg.Heartbeat)
	g1 := m1.claim("g1")
	p1 := m1.publish("p1")
	g2 := m3.claim("g2")
	// The last epoch handed out belongs to a copy that is over: only the
	// stored counter remembers it.
	last := m1.claim("tmp").Epoch
	m1.spawnFailed("tmp", "no such file")
	eventually(t, "tmp given back", func() bool { return e1.need("tmp").State == adminapi.StatePending })
	e1.stop()
	m1.expectClosed()
	m3.expectClosed()

	started := time.Now()
	e2 := start(t, cfg)
	fence := started.Add(cfg.Lease + cfg.Margin)
	var states []string
	for _, n := range e2.needs() {
		states = append(states, fmt.Sprintf("%s=%s@%s/%d", n.Need.Instance, n.State, n.Machine, n.Epoch))
	}
	want := []string{
		"free=pending@/0", fmt.Sprintf("g1=granted@m1/%d", g1.Epoch), fmt.Sprintf("g2=granted@m3/%d", g2.Epoch),
		fmt.Sprintf("p1=satisfied@m1/%d", p1.Epoch), "tmp=pending@/0",
	}
	if !reflect.DeepEqual(states, want) {
		t.Fatalf("after restart needs = %v, want %v", states, want)
	}
	for _, m := range e2.machines() {
		if m.Connected || m.CopiesEndAt.Before(fence) {
			t.Fatalf("machine %+v: want away with its copies until at least %v", m, fence)
		}
	}
	if _, err := lanmanager.New(cfg); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second LAN manager on the same data dir: %v, want locked error", err)
	}
	m2 := e2.connect(t, hello("m2", "web"))
	m2.pinging(cfg.Heartbeat)
	// m1 comes back with g1 starting and p1 running.
	h := hello("m1", "web")
	h.Running = []lanwire.RunningService{m1.running("g1", 0, nil), m1.running("p1", p1.PID, p1.Ports)}
	m1 = e2.connect(t, h)
	m1.pinging(cfg.Heartbeat)
	// m3 never comes back: g2 is offered to m2 after its fence, g1 never.
	var offered time.Time
	for offered.IsZero() {
		f := m2.next()
		if f.typ != lanwire.TypeNeeds {
			t.Fatalf("m2 got %s %+v", f.typ, f.p)
		}
		names := needNames(f)
		if slices.Contains(names, "g1") || slices.Contains(names, "p1") {
			t.Fatalf("m1's copies offered to m2: %v", names)
		}
		if slices.Contains(names, "g2") {
			offered = f.at
		}
	}
	if offered.Before(fence) {
		t.Fatalf("g2 offered %v after the restart, before lease + margin (%v)", offered.Sub(started), cfg.Lease+cfg.Margin)
	}
	if late := fence.Add(5 * time.Second); offered.After(late) {
		t.Errorf("g2 offered %v after the restart, long after lease + margin", offered.Sub(started))
	}
	if n := e2.need("g1"); n.State != adminapi.StateGranted || n.Machine != "m1" || n.Epoch != g1.Epoch {
		t.Fatalf("g1 = %+v, want still granted to m1", n)
	}
	svcs := e2.services()
	if len(svcs) != 1 || svcs[0].Instance != "p1" || svcs[0].Epoch != p1.Epoch || !svcs[0].PublishedAt.Equal(p1.PublishedAt) {
		t.Fatalf("services = %+v", svcs)
	}
	// m1's starting copy comes up under the epoch granted before the restart.
	m1.spawned("g1", 77, lanwire.Ports{"tcp": listener(t)})
	if rec := m1.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service; rec.Epoch != g1.Epoch {
		t.Fatalf("g1 published as %+v, want epoch %d", rec, g1.Epoch)
	}
	if g := m2.claim("g2"); g.Epoch <= last {
		t.Fatalf("first epoch after the restart %d, want more than %d", g.Epoch, last)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
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
	for _, n := range e.needs() {
		got[n.Need.Instance] = n
	}
	if len(got) != 4 || got["y"].Need.Module != "db" || got["y"].Origin != "file:"+over || got["x"].Origin != "file:"+base || got["api1"].Origin != "api" {
		t.Fatalf("needs = %+v", got)
	}
	m := e.connect(t, hello("m1", "web"))
	m.expectNeeds("api1", "x", "z")
	z := m.publish("z")
	e.stop()

	// x is changed, y and z dropped from the files: y (pending) is
	// removed, z (running) is removed once its copy has stopped, x is
	// updated, the API need kept.
	base = writeFile(t, dir, "base.json", `{"needs":[{"instance":"x","module":"web","properties":{"v":"2"}}]}`)
	cfg.NeedsFiles = []string{base}
	e = start(t, cfg)
	var names []string
	for _, n := range e.needs() {
		names = append(names, n.Need.Instance)
		if n.Need.Instance == "x" && n.Need.Properties["v"] != "2" {
			t.Errorf("x not updated: %+v", n)
		}
		if n.Need.Instance == "z" && (!n.Removed || n.State != adminapi.StateStopping) {
			t.Errorf("z = %+v, want removed and stopping", n)
		}
	}
	if !reflect.DeepEqual(names, []string{"api1", "x", "z"}) {
		t.Fatalf("needs = %v", names)
	}
	if svcs := e.services(); len(svcs) != 0 {
		t.Fatalf("services = %+v", svcs)
	}
	h := hello("m1", "web")
	h.Running = []lanwire.RunningService{m.running("z", z.PID, z.Ports)}
	m = e.connect(t, h)
	if s := m.expect(lanwire.TypeStop).p.(*lanwire.Stop); s.Instance != "z" || s.Epoch != z.Epoch {
		t.Fatalf("stop = %+v", s)
	}
	m.down("z", false)
	eventually(t, "z forgotten", func() bool { return len(e.needs()) == 2 })
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
	if n := e.needs(); len(n) != 2 {
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
		{"lease under two heartbeats", func(c *lanmanager.Config) { c.Lease = c.Heartbeat }, "lease"},
		{"fence grace not under the lease", func(c *lanmanager.Config) { c.Lease, c.FenceGrace = 2*time.Second, 2*time.Second }, "fence grace"},
		{"exit fence over the lease", func(c *lanmanager.Config) {
			c.Lease, c.FenceGrace, c.ExitFence = 2*time.Second, time.Second, 3*time.Second
		}, "exit fence"},
		{"negative margin", func(c *lanmanager.Config) { c.Margin = -time.Second }, "margin"},
		{"negative per-IP cap", func(c *lanmanager.Config) { c.MaxUnauthPerIP = -1 }, "per IP -1"},
		{"negative total cap", func(c *lanmanager.Config) { c.MaxUnauth = -1 }, "connections -1"},
		{"negative unauth timeout", func(c *lanmanager.Config) { c.UnauthTimeout = -time.Second }, "timeout -1s"},
		{"negative hello timeout", func(c *lanmanager.Config) { c.HelloTimeout = -time.Second }, "hello timeout -1s"},
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
