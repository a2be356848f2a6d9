package lanmanager_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
	"github.com/gorilla/websocket"
)

func TestAuthRefused(t *testing.T) {
	e := start(t, testConfig())
	for _, tok := range []string{"", "wrong"} {
		conn, resp, err := e.dial(tok)
		if err == nil {
			conn.Close()
			t.Fatalf("token %q: upgrade succeeded", tok)
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token %q: resp %v, err %v; want 401", tok, resp, err)
		}
	}
	resp, err := http.Get(e.base + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestAuthScheme: the Authorization scheme is case-insensitive and may be
// followed by several spaces (RFC 7235); anything else is refused, for the
// admin API and the link alike.
func TestAuthScheme(t *testing.T) {
	e := start(t, testConfig())
	tests := []struct {
		header string
		ok     bool
	}{
		{"Bearer " + testToken, true},
		{"bearer " + testToken, true},
		{"BEARER " + testToken, true},
		{"Bearer   " + testToken, true},
		{"Bearer " + testToken + "x", false},
		{"Bearer", false},
		{"Bearer" + testToken, false},
		{"Basic " + testToken, false},
		{"Bearerx " + testToken, false},
		{testToken, false},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", e.base+"/v1/needs", nil)
		req.Header.Set("Authorization", tt.header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.StatusCode == http.StatusOK; got != tt.ok || (!got && resp.StatusCode != http.StatusUnauthorized) {
			t.Errorf("admin call with %q: %d, want ok %v", tt.header, resp.StatusCode, tt.ok)
		}
		d := websocket.Dialer{HandshakeTimeout: wait}
		conn, resp, err := d.Dial(e.wsURL, http.Header{"Authorization": {tt.header}})
		if conn != nil {
			conn.Close()
		}
		if (err == nil) != tt.ok || (!tt.ok && (resp == nil || resp.StatusCode != http.StatusUnauthorized)) {
			t.Errorf("link with %q: %v, want ok %v", tt.header, err, tt.ok)
		}
	}
}

func TestHelloNeedsFiltered(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(
		tcpNeed("a", "web"),
		tcpNeed("b", "db"),
		lanwire.Need{Instance: "c", Module: "web", Machine: &lanwire.MachineConstraint{ID: "m2"}},
		lanwire.Need{Instance: "d", Module: "web", Machine: &lanwire.MachineConstraint{Address: "10.0.0.0/8"}},
		lanwire.Need{Instance: "e", Module: "web", Machine: &lanwire.MachineConstraint{Address: "127.0.0.0/8"}},
	)
	m1 := e.rawMaster(t)
	h1 := hello("m1", "web")
	m1.send(lanwire.TypeHello, &h1)
	w := m1.next()
	if w.typ != lanwire.TypeWelcome {
		t.Fatalf("first frame %s, want welcome", w.typ)
	}
	// The timings announced are the configured ones (the defaults here).
	if wl := w.p.(*lanwire.Welcome); wl.SessionID == "" || wl.Timings != lanwire.DefaultTimings() {
		t.Fatalf("welcome = %+v", wl)
	}
	m1.expectNeeds("a", "e")
	m2 := e.connect(t, hello("m2", "web", "db"))
	m2.expectNeeds("a", "b", "c", "e")
	// A new need is offered to the masters it fits, live.
	e.addNeeds(tcpNeed("f", "db"))
	m2.expectNeeds("a", "b", "c", "e", "f")
	// Capacity: a full master gets an empty list.
	m1.send(lanwire.TypeCapacity, &lanwire.Capacity{MaxProcesses: 1, Running: 1})
	m1.expectNeeds()
	m1.send(lanwire.TypeCapacity, &lanwire.Capacity{MaxProcesses: 2, Running: 1})
	m1.expectNeeds("a", "e")
}

// TestClaim: a grant carries the need and a fresh epoch; the refused
// claims get a deny with the reason (the reasons themselves are lanstate's
// TestClaimDenied).
func TestClaim(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("a", "web"), tcpNeed("b", "web"), tcpNeed("d", "db"))
	m1 := e.connect(t, hello("m1", "web"))
	m2 := e.connect(t, hello("m2", "web"))
	g := m1.claim("a")
	if g.Need.Instance != "a" || g.Need.Protocols[0] != "tcp" || g.Epoch == 0 {
		t.Fatalf("grant = %+v", g)
	}
	if g2 := m2.claim("b"); g2.Epoch <= g.Epoch {
		t.Fatalf("second grant epoch %d, first %d: want growing epochs", g2.Epoch, g.Epoch)
	}
	m1.expectNeeds()
	m2.expectNeeds()
	for inst, reason := range map[string]string{"a": "already granted", "nope": "no such need", "d": "not served"} {
		if d := m2.deny(inst); !strings.Contains(d.Reason, reason) {
			t.Errorf("claim %s: deny %+v, want reason with %q", inst, d, reason)
		}
	}
	if n := e.need("a"); n.State != adminapi.StateGranted || n.Machine != "m1" || n.Epoch != g.Epoch {
		t.Fatalf("need a = %+v", n)
	}
}

func TestClaimRace(t *testing.T) {
	e := start(t, testConfig())
	const n = 50
	var names []string
	for i := range n {
		inst := "n" + strings.Repeat("x", i%3) + string(rune('A'+i%26)) + string(rune('a'+i/26))
		names = append(names, inst)
		e.addNeeds(tcpNeed(inst, "web"))
	}
	masters := []*master{e.connect(t, hello("m1", "web")), e.connect(t, hello("m2", "web"))}
	var wg sync.WaitGroup
	for _, m := range masters {
		for _, inst := range names {
			m.send(lanwire.TypeClaim, &lanwire.Claim{Instance: inst})
		}
	}
	granted := make([]map[string]uint64, len(masters))
	for i, m := range masters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			granted[i] = map[string]uint64{}
			answers := 0
			for answers < n {
				select {
				case f := <-m.frames:
					switch f.typ {
					case lanwire.TypeGrant:
						g := f.p.(*lanwire.Grant)
						granted[i][g.Need.Instance] = g.Epoch
						answers++
					case lanwire.TypeDeny:
						answers++
					}
				case <-time.After(wait):
					t.Errorf("master %d: only %d answers", i, answers)
					return
				}
			}
		}()
	}
	wg.Wait()
	epochs := map[uint64]bool{}
	for _, inst := range names {
		e1, ok1 := granted[0][inst]
		e2, ok2 := granted[1][inst]
		if ok1 == ok2 {
			t.Errorf("%s: granted to m1=%v m2=%v, want exactly one", inst, ok1, ok2)
		}
		epochs[e1+e2] = true
	}
	if len(epochs) != n {
		t.Errorf("%d distinct epochs for %d grants", len(epochs), n)
	}
}

func TestSpawnedApproved(t *testing.T) {
	e := start(t, testConfig())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan adminapi.ServiceEvent, 16)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- e.client.Watch(ctx, "web", func(ev adminapi.ServiceEvent) error { events <- ev; return nil })
	}()
	e.addNeeds(lanwire.Need{Instance: "w1", Module: "web", Protocols: []string{"tcp", "http"}, Properties: map[string]string{"k": "v"}})
	m := e.connect(t, hello("m1", "web"))
	g := m.claim("w1")
	p1, p2 := listener(t), listener(t)
	started := time.Now().Add(-time.Second).UTC().Truncate(time.Millisecond)
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", Epoch: g.Epoch, PID: 77, Ports: lanwire.Ports{"tcp": p1, "http": p2}, StartedAt: started})
	rec := m.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service
	if rec.Instance != "w1" || rec.MachineID != "m1" || rec.Epoch != g.Epoch || rec.Address != "127.0.0.1" || rec.PID != 77 || rec.Ports["http"] != p2 || rec.Properties["k"] != "v" || !rec.StartedAt.Equal(started) || rec.PublishedAt.IsZero() {
		t.Fatalf("record = %+v", rec)
	}
	got, err := e.client.Service(ctx, "w1")
	if err != nil || got.PID != 77 || got.Epoch != g.Epoch {
		t.Fatalf("Service = %+v, %v", got, err)
	}
	list, err := e.client.Services(ctx, "web", "")
	if err != nil || len(list) != 1 {
		t.Fatalf("Services = %+v, %v", list, err)
	}
	if list, _ := e.client.Services(ctx, "db", ""); len(list) != 0 {
		t.Fatalf("Services(db) = %+v", list)
	}
	needs, err := e.client.Needs(ctx)
	if err != nil || len(needs) != 1 || needs[0].State != adminapi.StateSatisfied || needs[0].Machine != "m1" || needs[0].Epoch != g.Epoch {
		t.Fatalf("Needs = %+v, %v", needs, err)
	}
	select {
	case ev := <-events:
		if ev.Type != adminapi.EventUp || ev.Service.Instance != "w1" {
			t.Fatalf("event = %+v", ev)
		}
	case <-time.After(wait):
		t.Fatal("no up event")
	}
	machines, err := e.client.Machines(ctx)
	if err != nil || len(machines) != 1 || !machines[0].Connected || machines[0].Services != 1 || machines[0].Copies != 1 || machines[0].Identity != identityOf("m1")[:8] {
		t.Fatalf("Machines = %+v, %v", machines, err)
	}
	// A new watcher starts with the current services.
	ctx2, cancel2 := context.WithCancel(ctx)
	err = e.client.Watch(ctx2, "", func(ev adminapi.ServiceEvent) error {
		if ev.Type != adminapi.EventUp || ev.Service.Instance != "w1" {
			t.Errorf("first event %+v", ev)
		}
		cancel2()
		return nil
	})
	if err != context.Canceled {
		t.Fatalf("Watch = %v", err)
	}
	cancel()
	<-watchDone
}

// TestSpawnedClosedPort: the port check (the socket layer's) rejects a
// copy whose port does not answer or is not the fixed one; the copy stops
// and its need is offered again after the master confirms and the backoff.
func TestSpawnedClosedPort(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.expectNeeds("w1")
	g := m.claim("w1")
	before := time.Now()
	m.spawned("w1", 5, lanwire.Ports{"tcp": closedPort(t)})
	rej := m.expect(lanwire.TypeRejected).p.(*lanwire.Rejected)
	if rej.Instance != "w1" || rej.Epoch != g.Epoch || !strings.Contains(rej.Reason, "unreachable") {
		t.Fatalf("rejected = %+v", rej)
	}
	n := e.need("w1")
	if n.State != adminapi.StateStopping || n.Attempts != 1 || !strings.Contains(n.LastError, "unreachable") || !n.NotBefore.After(before) {
		t.Fatalf("need = %+v", n)
	}
	if len(e.services()) != 0 {
		t.Fatal("service published after failed check")
	}
	// The master confirms the stop; offered again once the backoff ends.
	m.down("w1", false)
	m.expectNeeds("w1")
	// Missing and wrong fixed ports are refused the same way.
	e.addNeeds(lanwire.Need{Instance: "w2", Module: "web", Protocols: []string{"tcp", "http"}, FixedPorts: lanwire.Ports{"http": 1}})
	m.claim("w2")
	m.spawned("w2", 5, lanwire.Ports{"tcp": listener(t), "http": 2})
	if rej := m.expect(lanwire.TypeRejected).p.(*lanwire.Rejected); !strings.Contains(rej.Reason, "fixed port") {
		t.Fatalf("rejected = %+v", rej)
	}
}

func TestSpawnFailedAndDown(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.claim("w1")
	m.spawnFailed("w1", "exec: no such file")
	eventually(t, "need back to pending", func() bool {
		n := e.need("w1")
		return n.State == adminapi.StatePending && n.Attempts == 1 && strings.Contains(n.LastError, "no such file")
	})
	m.expectNeeds("w1")

	events := e.watch(t)
	first := m.publish("w1")
	m.down("w1", false)
	m.expectNeeds("w1")
	if len(e.services()) != 0 {
		t.Fatal("service still published after down")
	}
	if n := e.need("w1"); n.State != adminapi.StatePending {
		t.Fatalf("need = %+v", n)
	}
	expectEvent(t, events, adminapi.EventUp, "w1")
	expectEvent(t, events, adminapi.EventDown, "w1")
	// Re-offered: it can be claimed and published again, as a new copy.
	if again := m.publish("w1"); again.Epoch <= first.Epoch {
		t.Fatalf("new copy epoch %d, old %d", again.Epoch, first.Epoch)
	}
}

// TestReconnectReconcile: a master that closed its link alive and comes
// back before its fence keeps the copies it reports (a granted one running
// gets its port check), a copy it no longer reports has ended, and one that
// is not its own is told to stop. The state side is lanstate's
// TestReconnectWithinFence.
func TestReconnectReconcile(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"), tcpNeed("w3", "web"), tcpNeed("w4", "web"))
	m := e.connect(t, hello("m1", "web"))
	rec1 := m.publish("w1")
	m.publish("w2")
	m.claim("w3")
	m.closeWith(lanwire.CloseAlive)
	eventually(t, "machine away", func() bool {
		ms := e.machines()
		return len(ms) == 1 && !ms[0].Connected && !ms[0].CopiesEndAt.IsZero()
	})
	// Its copies are still its own: nothing moved.
	if len(e.services()) != 2 || e.need("w3").State != adminapi.StateGranted {
		t.Fatalf("needs after the link ended: %+v", e.needs())
	}
	events := e.watch(t)
	port := listener(t)
	h := hello("m1", "web")
	h.Running = []lanwire.RunningService{
		m.running("w1", rec1.PID, rec1.Ports),
		m.running("w3", 11, lanwire.Ports{"tcp": port}),
		{Instance: "ghost", Module: "web", Epoch: 99, PID: 12},
	}
	m = e.connect(t, h)
	gotStop, gotApproved := false, false
	var offered []string
	for !gotStop || !gotApproved {
		f := m.next()
		switch f.typ {
		case lanwire.TypeStop:
			if s := f.p.(*lanwire.Stop); s.Instance != "ghost" || s.Epoch != 99 {
				t.Fatalf("stop %+v", s)
			}
			gotStop = true
		case lanwire.TypeApproved:
			if a := f.p.(*lanwire.Approved); a.Service.Instance != "w3" || a.Service.PID != 11 || a.Service.Epoch != m.epoch("w3") {
				t.Fatalf("approved %+v", a)
			}
			gotApproved = true
		case lanwire.TypeNeeds:
			offered = needNames(f)
		default:
			t.Fatalf("unexpected %s %+v", f.typ, f.p)
		}
	}
	if !slices.Equal(offered, []string{"w2", "w4"}) {
		m.expectNeeds("w2", "w4")
	}
	svcs := e.services()
	if len(svcs) != 2 || svcs[0].Instance != "w1" || svcs[1].Instance != "w3" || !svcs[0].PublishedAt.Equal(rec1.PublishedAt) {
		t.Fatalf("services = %+v", svcs)
	}
	if n := e.need("w2"); n.State != adminapi.StatePending {
		t.Fatalf("w2 = %+v, want pending", n)
	}
	expectEvent(t, events, adminapi.EventDown, "w2")
	expectEvent(t, events, adminapi.EventUp, "w3")
}

// TestSessionReplaced: a second hello of the same master on a new
// connection closes the old one with CloseReplaced; from then on the old
// session gets no pong (pongs renew the lease), while the new one's pongs
// echo their payload. The copies the new hello reports are kept.
func TestSessionReplaced(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"))
	old := e.connect(t, hello("m1", "web"))
	rec := old.publish("w1")
	old.claim("w2")
	for _, p := range [][]byte{lanwire.PingPayload(time.Second), lanwire.PingPayload(time.Hour), {1, 2, 3}} {
		if err := old.conn.WriteControl(websocket.PingMessage, p, time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		old.expectPong(p)
	}
	events := e.watch(t)
	h := hello("m1", "web")
	h.Running = []lanwire.RunningService{old.running("w1", rec.PID, rec.Ports)}
	m := e.connect(t, h)
	// The old connection is replaced: pings on it go unanswered.
	for range 3 {
		if old.conn.WriteControl(websocket.PingMessage, lanwire.PingPayload(time.Minute), time.Now().Add(wait)) != nil {
			break
		}
	}
	if code := old.closeCode(); code != lanwire.CloseReplaced {
		t.Fatalf("old link closed with %d, want %d", code, lanwire.CloseReplaced)
	}
	if len(old.pongs) != 0 {
		t.Fatalf("%d pongs on the replaced session", len(old.pongs))
	}
	m.expectPong(m.ping())
	// w1, reported, is kept as it was; w2, not reported, has ended.
	if svc, err := e.srv.Service("w1"); err != nil || svc.Epoch != rec.Epoch || !svc.PublishedAt.Equal(rec.PublishedAt) {
		t.Fatalf("w1 = %+v, %v; want %+v", svc, err, rec)
	}
	m.expectNeeds("w2")
	e.noEvent(events)
}

// TestSecondIdentityRefused: a master saying hello as a machine id whose
// master (another identity) is connected is refused with an error frame
// and CloseRefused; the first master keeps its services and its link.
func TestSecondIdentityRefused(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"))
	m1 := e.connect(t, hello("m1", "web"))
	m1.publish("w1")
	clone := e.rawMaster(t)
	h := hello("m1", "web")
	h.Identity = "another-identity-0123"
	clone.send(lanwire.TypeHello, &h)
	f := clone.next()
	if f.typ != lanwire.TypeError {
		t.Fatalf("clone got %s %+v, want an error", f.typ, f.p)
	}
	if msg := f.p.(*lanwire.Error); msg.Ref != lanwire.TypeHello || !strings.Contains(msg.Message, "machineid") || !strings.Contains(msg.Message, identityOf("m1")[:8]) {
		t.Fatalf("refusal = %+v", msg)
	}
	if code := clone.closeCode(); code != lanwire.CloseRefused {
		t.Fatalf("clone closed with %d, want %d", code, lanwire.CloseRefused)
	}
	// Frames on m1's link are ordered: a stop sent with the refusal would
	// come before this deny.
	m1.deny("nope")
	if svcs := e.services(); len(svcs) != 1 || svcs[0].MachineID != "m1" {
		t.Fatalf("services = %+v", svcs)
	}
	if ms := e.machines(); len(ms) != 1 || !ms[0].Connected || ms[0].Identity != identityOf("m1")[:8] {
		t.Fatalf("machines = %+v", ms)
	}
}

// TestRemoveNeed: a removed need's copy is told to stop and stays listed
// (removed, stopping) until its master confirms; a pending one goes at
// once.
func TestRemoveNeed(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"), tcpNeed("w3", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.publish("w1")
	ctx := context.Background()
	if err := e.client.RemoveNeed(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if s := m.expect(lanwire.TypeStop).p.(*lanwire.Stop); s.Instance != "w1" || s.Epoch != m.epoch("w1") {
		t.Fatalf("stop %+v", s)
	}
	if len(e.services()) != 0 {
		t.Fatal("removed need's service still published")
	}
	m.claim("w2")
	if err := e.client.RemoveNeed(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	if s := m.expect(lanwire.TypeStop).p.(*lanwire.Stop); s.Instance != "w2" || s.Epoch != m.epoch("w2") {
		t.Fatalf("stop %+v", s)
	}
	if err := e.client.RemoveNeed(ctx, "w3"); err != nil {
		t.Fatal(err)
	}
	m.expectNeeds()
	var listed []string
	for _, n := range e.needs() {
		if !n.Removed || n.State != adminapi.StateStopping {
			t.Fatalf("need %+v, want removed and stopping", n)
		}
		listed = append(listed, n.Need.Instance)
	}
	if !slices.Equal(listed, []string{"w1", "w2"}) {
		t.Fatalf("needs = %v", listed)
	}
	m.down("w1", false)
	m.spawnFailed("w2", "stopped")
	eventually(t, "stopped needs forgotten", func() bool { return len(e.needs()) == 0 })
}

// TestGrantTimeout: a grant not reported spawned in time is told to stop;
// the need is offered again once the master confirms and the backoff ends.
func TestGrantTimeout(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(lanwire.Need{Instance: "w1", Module: "web", TimeoutMS: 300})
	m := e.connect(t, hello("m1", "web"))
	m.claim("w1")
	s := m.expect(lanwire.TypeStop).p.(*lanwire.Stop)
	if s.Instance != "w1" || s.Epoch != m.epoch("w1") || !strings.Contains(s.Reason, "expired") {
		t.Fatalf("stop %+v", s)
	}
	// A late spawned of the stopping copy is told to stop again.
	m.spawned("w1", 3, nil)
	m.expect(lanwire.TypeStop)
	if n := e.need("w1"); n.State != adminapi.StateStopping || n.Attempts != 1 || !strings.Contains(n.LastError, "expired") {
		t.Fatalf("need = %+v", n)
	}
	m.down("w1", false)
	m.expectNeeds("w1")
}

func TestMalformedFrames(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.expectNeeds("w1", "w2")
	tests := []struct {
		name, frame, ref, msg string
		stop                  bool // a stop follows the error
	}{
		{"not json", `{"type":`, "", "envelope", false},
		{"unknown type", `{"type":"nope","data":{}}`, "", "unknown type", false},
		{"unknown field", `{"type":"claim","data":{"instance":"w1","x":1}}`, "claim", "unknown field", false},
		{"repeated field", `{"type":"claim","data":{"instance":"w1","instance":"w2"}}`, "claim", `data: duplicate field "instance"`, false},
		{"repeated type", `{"type":"down","type":"claim","data":{"instance":"w1"}}`, "", `duplicate field "type"`, false},
		{"server frame", `{"type":"grant","data":{"need":{"instance":"w1","module":"web"},"epoch":1}}`, "grant", "sent by the LAN manager", false},
		{"second hello", `{"type":"hello","data":{"machine":"m1","identity":"` + identityOf("m1") + `","address":"127.0.0.1","modules":[],"capacity":{"maxprocesses":0,"running":0}}}`, "hello", "already", false},
		{"no epoch", `{"type":"down","data":{"instance":"w1","pid":3,"exitcode":0}}`, "down", "epoch 0", false},
		{"spawned ungranted", `{"type":"spawned","data":{"instance":"w1","epoch":7,"pid":3}}`, "spawned", "not a copy of this master", true},
		{"spawn_failed ungranted", `{"type":"spawn_failed","data":{"instance":"w1","epoch":7,"error":"x"}}`, "spawn_failed", "not a copy", false},
		{"down unknown", `{"type":"down","data":{"instance":"zz","epoch":7,"pid":3,"exitcode":0}}`, "down", "not a copy", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m.t = t
			m.sendRaw([]byte(tt.frame))
			f := m.expect(lanwire.TypeError).p.(*lanwire.Error)
			if f.Ref != tt.ref || !strings.Contains(f.Message, tt.msg) {
				t.Fatalf("error = %+v, want ref %q and %q", f, tt.ref, tt.msg)
			}
			if tt.stop {
				if s := m.expect(lanwire.TypeStop).p.(*lanwire.Stop); s.Instance != "w1" || s.Epoch != 7 {
					t.Fatalf("stop = %+v", s)
				}
			}
		})
	}
	m.t = t
	if err := m.conn.WriteMessage(websocket.BinaryMessage, []byte("x")); err != nil {
		t.Fatal(err)
	}
	m.expect(lanwire.TypeError)
	// State unchanged and the link still works.
	if n := e.needs(); len(n) != 2 || n[0].State != adminapi.StatePending || n[0].Attempts != 0 {
		t.Fatalf("needs = %+v", n)
	}
	m.claim("w1")
	// A frame over the limit closes the link.
	// (The LAN manager may close it before the write ends.)
	_ = m.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"claim","data":{"instance":"`+strings.Repeat("x", lanwire.MaxFrameSize)+`"}}`))
	m.expectClosed()
}

func TestBadFirstFrame(t *testing.T) {
	e := start(t, testConfig())
	tests := []struct{ name, frame, msg string }{
		{"not hello", `{"type":"claim","data":{"instance":"w1"}}`, "must be hello"},
		{"bad address", `{"type":"hello","data":{"machine":"m1","identity":"` + identityOf("m1") + `","address":"nope","modules":[],"capacity":{"maxprocesses":0,"running":0}}}`, "address"},
		{"no identity", `{"type":"hello","data":{"machine":"m1","address":"127.0.0.1","modules":[],"capacity":{"maxprocesses":0,"running":0}}}`, "identity"},
		{"short identity", `{"type":"hello","data":{"machine":"m1","identity":"0123456789abcde","address":"127.0.0.1","modules":[],"capacity":{"maxprocesses":0,"running":0}}}`, "identity"},
		{"not json", `hello`, "envelope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := e.rawMaster(t)
			m.sendRaw([]byte(tt.frame))
			if f := m.expect(lanwire.TypeError).p.(*lanwire.Error); !strings.Contains(f.Message, tt.msg) {
				t.Fatalf("error = %+v, want %q", f, tt.msg)
			}
			if code := m.closeCode(); code != websocket.ClosePolicyViolation {
				t.Fatalf("closed with %d, want %d", code, websocket.ClosePolicyViolation)
			}
		})
	}
	if ms := e.machines(); len(ms) != 0 {
		t.Fatalf("machines after refused hellos: %+v", ms)
	}
}

func TestAdminErrors(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"))
	tests := []struct {
		name, method, path, token, body string
		status                          int
		msg                             string
	}{
		{"no token", "GET", "/v1/needs", "", "", 401, "token"},
		{"wrong token", "GET", "/v1/machines", "x", "", 401, "token"},
		{"bad json", "POST", "/v1/needs", testToken, `{"instance":`, 400, "need"},
		{"unknown field", "POST", "/v1/needs", testToken, `{"instance":"a","module":"m","color":1}`, 400, "unknown field"},
		{"repeated field", "POST", "/v1/needs", testToken, `{"instance":"r1","module":"web","instance":"r2"}`, 400, `duplicate field "instance"`},
		{"repeated nested field", "POST", "/v1/needs", testToken, `{"instance":"r1","module":"web","protocols":["tcp"],"fixedports":{"tcp":9000,"tcp":9001}}`, 400, `fixedports: duplicate field "tcp"`},
		{"invalid need", "POST", "/v1/needs", testToken, `{"instance":"../x","module":"m"}`, 400, "instance"},
		{"duplicate", "POST", "/v1/needs", testToken, `{"instance":"w1","module":"web"}`, 409, "already exists"},
		{"too big", "POST", "/v1/needs", testToken, `{"instance":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "body"},
		{"delete unknown", "DELETE", "/v1/needs/zz", testToken, "", 404, "zz"},
		{"service unknown", "GET", "/v1/services/zz", testToken, "", 404, "zz"},
		{"ok", "POST", "/v1/needs", testToken, `{"instance":"w2","module":"web"}`, 201, ""},
		// Batches are all or none: b1 must not be added by any refused one.
		{"batch empty", "POST", "/v1/needs", testToken, `[]`, 400, "empty"},
		{"batch bad json", "POST", "/v1/needs", testToken, `[{"instance":"b1","module":"web"},`, 400, "needs array"},
		{"batch bad need", "POST", "/v1/needs", testToken, `[{"instance":"b1","module":"web"},{"instance":"../x","module":"m"}]`, 400, "need 1"},
		{"batch repeated field", "POST", "/v1/needs", testToken, `[{"instance":"b1","module":"web"},{"instance":"r1","module":"web","module":"x"}]`, 400, `need 1: need: duplicate field "module"`},
		{"batch named twice", "POST", "/v1/needs", testToken, `[{"instance":"b1","module":"web"},{"instance":"b1","module":"web"}]`, 400, "given twice"},
		{"batch conflict", "POST", "/v1/needs", testToken, `[{"instance":"b1","module":"web"},{"instance":"w1","module":"web"}]`, 409, "already exists"},
		{"batch ok", "POST", "/v1/needs", testToken, ` [{"instance":"b1","module":"web"},{"instance":"b2","module":"web"}]`, 201, ""},
		{"batch again", "POST", "/v1/needs", testToken, `[{"instance":"b3","module":"web"},{"instance":"b1","module":"web"}]`, 409, "already exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, e.base+tt.path, strings.NewReader(tt.body))
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body adminapi.ErrorBody
			_ = json.NewDecoder(bufio.NewReader(resp.Body)).Decode(&body)
			if resp.StatusCode != tt.status || !strings.Contains(body.Error, tt.msg) {
				t.Fatalf("%d %q, want %d with %q", resp.StatusCode, body.Error, tt.status, tt.msg)
			}
		})
	}
	var got []string
	for _, n := range e.needs() {
		got = append(got, n.Need.Instance)
	}
	if want := []string{"b1", "b2", "w1", "w2"}; !slices.Equal(got, want) {
		t.Fatalf("needs after the admin calls: %v, want %v", got, want)
	}
}

// TestReconcileConflicts: a master whose hello reports copies that are not
// its own is told to stop them, naming why, and the owner is not disturbed.
func TestReconcileConflicts(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"), tcpNeed("w3", "web"))
	m1 := e.connect(t, hello("m1", "web"))
	m1.publish("w1")
	m1.claim("w2")
	h := hello("m2", "web")
	h.Running = []lanwire.RunningService{
		m1.running("w1", 2, nil),
		m1.running("w2", 3, nil),
		{Instance: "w3", Module: "web", Epoch: 50, PID: 4},
	}
	m2 := e.connect(t, h)
	want := map[string]string{"w1": "granted to machine m1", "w2": "granted to machine m1", "w3": "not granted to anyone"}
	for range len(want) {
		s := m2.expect(lanwire.TypeStop).p.(*lanwire.Stop)
		if !strings.Contains(s.Reason, want[s.Instance]) {
			t.Errorf("stop %+v, want reason with %q", s, want[s.Instance])
		}
		delete(want, s.Instance)
	}
	if len(want) != 0 {
		t.Fatalf("no stop for %v", want)
	}
	// m1's link is ordered: a stop for it would come before this deny.
	m1.deny("nope")
	if svcs := e.services(); len(svcs) != 1 || svcs[0].MachineID != "m1" {
		t.Fatalf("services = %+v", svcs)
	}
	if n := e.need("w2"); n.State != adminapi.StateGranted || n.Machine != "m1" {
		t.Fatalf("w2 = %+v", n)
	}
}

func TestIPv6Master(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	e := start(t, testConfig())
	e.addNeeds(lanwire.Need{Instance: "w1", Module: "web", Protocols: []string{"tcp"}, Machine: &lanwire.MachineConstraint{Address: "::1"}})
	h := hello("m6", "web")
	h.Address = "::1"
	m := e.connect(t, h)
	m.claim("w1")
	m.spawned("w1", 9, lanwire.Ports{"tcp": uint16(ln.Addr().(*net.TCPAddr).Port)})
	if rec := m.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service; rec.Address != "::1" {
		t.Fatalf("record = %+v", rec)
	}
}

// TestCrashLoopBacksOff: downs within the crash-loop limit are offered
// again at once; one more backs the need off; a need removed and added
// again starts with a clean record.
func TestCrashLoopBacksOff(t *testing.T) {
	cfg := testConfig()
	cfg.CrashLoopLimit = 2
	// Long enough (a jittered 0.5-1s) for the claim below to land in it.
	cfg.RetryBackoffInitial = time.Second
	cfg.RetryBackoffMax = time.Second
	e := start(t, cfg)
	e.addNeeds(tcpNeed("w1", "web"))
	m := e.connect(t, hello("m1", "web"))
	for i := 0; i < cfg.CrashLoopLimit; i++ {
		m.publish("w1")
		m.down("w1", false)
		m.expectNeeds("w1")
		if n := e.need("w1"); n.State != adminapi.StatePending || n.Attempts != 0 {
			t.Fatalf("down %d: need %+v, want pending with no backoff", i+1, n)
		}
	}
	// One more within the window is a crash loop: the need waits.
	m.publish("w1")
	m.down("w1", false)
	eventually(t, "crash-loop backoff", func() bool {
		n := e.need("w1")
		return n.State == adminapi.StatePending && n.Attempts == 1 && strings.Contains(n.LastError, "crash loop")
	})
	if d := m.deny("w1"); !strings.Contains(d.Reason, "backing off") {
		t.Fatalf("deny %+v", d)
	}
	// After the backoff it is offered and can run again.
	m.expectNeeds("w1")
	m.publish("w1")

	// A need removed and added again starts with a clean record.
	if err := e.srv.RemoveNeed("w1"); err != nil {
		t.Fatal(err)
	}
	m.expect(lanwire.TypeStop)
	m.down("w1", false)
	e.addNeeds(tcpNeed("w1", "web"))
	m.publish("w1")
	m.down("w1", false)
	m.expectNeeds("w1")
	if n := e.need("w1"); n.Attempts != 0 {
		t.Fatalf("need %+v after re-adding it, want no attempts", n)
	}
}
