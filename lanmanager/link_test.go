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
	m1.send(lanwire.TypeHello, &lanwire.Hello{MachineID: "m1", Address: "127.0.0.1", Modules: []string{"web"}})
	w := m1.next()
	if w.typ != lanwire.TypeWelcome {
		t.Fatalf("first frame %s, want welcome", w.typ)
	}
	if wl := w.p.(*lanwire.Welcome); wl.SessionID == "" || wl.HeartbeatMS != 1000 || wl.GraceMS != 60000 {
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

func TestClaim(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("a", "web"), lanwire.Need{Instance: "c", Module: "web", Machine: &lanwire.MachineConstraint{ID: "m9"}}, tcpNeed("d", "db"))
	m1 := e.connect(t, hello("m1", "web"))
	m2 := e.connect(t, hello("m2", "web"))
	if n := m1.claim("a"); n.Instance != "a" || n.Protocols[0] != "tcp" {
		t.Fatalf("grant = %+v", n)
	}
	m1.expectNeeds()
	m2.expectNeeds()
	tests := []struct{ inst, reason string }{
		{"a", "already granted"},
		{"nope", "no such need"},
		{"c", "machine constraint"},
		{"d", "not served"},
	}
	for _, tt := range tests {
		m2.send(lanwire.TypeClaim, &lanwire.Claim{Instance: tt.inst})
		d := m2.expect(lanwire.TypeDeny).p.(*lanwire.Deny)
		if d.Instance != tt.inst || !strings.Contains(d.Reason, tt.reason) {
			t.Errorf("claim %s: deny %+v, want reason with %q", tt.inst, d, tt.reason)
		}
	}
	if st, _, _ := needState(e, "a"); st != adminapi.StateGranted {
		t.Fatalf("state = %q", st)
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
	granted := make([]map[string]bool, len(masters))
	for i, m := range masters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			granted[i] = map[string]bool{}
			answers := 0
			for answers < n {
				select {
				case f := <-m.frames:
					switch f.typ {
					case lanwire.TypeGrant:
						granted[i][f.p.(*lanwire.Grant).Need.Instance] = true
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
	for _, inst := range names {
		if granted[0][inst] == granted[1][inst] {
			t.Errorf("%s: granted to m1=%v m2=%v, want exactly one", inst, granted[0][inst], granted[1][inst])
		}
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
	m.claim("w1")
	p1, p2 := listener(t), listener(t)
	started := time.Now().Add(-time.Second).UTC().Truncate(time.Millisecond)
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", PID: 77, Ports: lanwire.Ports{"tcp": p1, "http": p2}, StartedAt: started})
	rec := m.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service
	if rec.Instance != "w1" || rec.MachineID != "m1" || rec.Address != "127.0.0.1" || rec.PID != 77 || rec.Ports["http"] != p2 || rec.Properties["k"] != "v" || !rec.StartedAt.Equal(started) || rec.PublishedAt.IsZero() {
		t.Fatalf("record = %+v", rec)
	}
	got, err := e.client.Service(ctx, "w1")
	if err != nil || got.PID != 77 {
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
	if err != nil || len(needs) != 1 || needs[0].State != adminapi.StateSatisfied || needs[0].Machine != "m1" {
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
	if err != nil || len(machines) != 1 || !machines[0].Connected || machines[0].Services != 1 {
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

func TestSpawnedClosedPort(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.expectNeeds("w1")
	m.claim("w1")
	port := closedPort(t)
	before := time.Now()
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", PID: 5, Ports: lanwire.Ports{"tcp": port}})
	rej := m.expect(lanwire.TypeRejected).p.(*lanwire.Rejected)
	if rej.Instance != "w1" || !strings.Contains(rej.Reason, "unreachable") {
		t.Fatalf("rejected = %+v", rej)
	}
	needs := e.srv.Needs()
	if len(needs) != 1 || needs[0].State != adminapi.StatePending || needs[0].Attempts != 1 || !strings.Contains(needs[0].LastError, "unreachable") || !needs[0].NotBefore.After(before) {
		t.Fatalf("needs = %+v", needs)
	}
	if len(e.srv.Services(lanmanagerFilter())) != 0 {
		t.Fatal("service published after failed check")
	}
	// Re-offered once the backoff ends.
	m.expectNeeds("w1")
	// Missing and wrong fixed ports are refused the same way.
	e.addNeeds(lanwire.Need{Instance: "w2", Module: "web", Protocols: []string{"tcp", "http"}, FixedPorts: lanwire.Ports{"http": 1}})
	m.claim("w2")
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w2", PID: 5, Ports: lanwire.Ports{"tcp": listener(t), "http": 2}})
	if rej := m.expect(lanwire.TypeRejected).p.(*lanwire.Rejected); !strings.Contains(rej.Reason, "fixed port") {
		t.Fatalf("rejected = %+v", rej)
	}
}

func TestSpawnFailedAndDown(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.claim("w1")
	m.send(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: "w1", Error: "exec: no such file"})
	eventually(t, "need back to pending", func() bool {
		st, att, le := needState(e, "w1")
		return st == adminapi.StatePending && att == 1 && strings.Contains(le, "no such file")
	})
	m.expectNeeds("w1")

	// Subscribed before the publish, unlike an HTTP watch started in a
	// goroutine, which may miss both events.
	_, events, cancel := e.srv.Watch("")
	defer cancel()
	m.publish("w1")
	m.send(lanwire.TypeDown, &lanwire.Down{Instance: "w1", PID: 4242, ExitCode: 1})
	m.expectNeeds("w1")
	if len(e.srv.Services(lanmanagerFilter())) != 0 {
		t.Fatal("service still published after down")
	}
	if st, _, _ := needState(e, "w1"); st != adminapi.StatePending {
		t.Fatalf("state = %q", st)
	}
	for _, want := range []string{adminapi.EventUp, adminapi.EventDown} {
		select {
		case ev := <-events:
			if ev.Type != want {
				t.Fatalf("event %+v, want %s", ev, want)
			}
		case <-time.After(wait):
			t.Fatalf("no %s event", want)
		}
	}
	// Re-offered: it can be claimed and published again.
	m.publish("w1")
}

func TestGraceAndReconnect(t *testing.T) {
	cfg := testConfig()
	cfg.Grace = 3 * time.Second
	e := start(t, cfg)
	e.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"))
	m := e.connect(t, hello("m1", "web"))
	rec := m.publish("w1")
	m.conn.Close()
	eventually(t, "machine disconnected", func() bool {
		ms := e.srv.Machines()
		return len(ms) == 1 && !ms[0].Connected
	})
	// Back within grace with the child running: kept, not re-approved.
	h := hello("m1", "web")
	h.Running = []lanwire.RunningService{{Instance: "w1", Module: "web", PID: 999, Ports: rec.Ports, StartedAt: rec.StartedAt}}
	m = e.connect(t, h)
	m.expectNeeds("w2")
	m.quiet(cfg.Grace + time.Second)
	svcs := e.srv.Services(lanmanagerFilter())
	if len(svcs) != 1 || svcs[0].PID != 999 || !svcs[0].PublishedAt.Equal(rec.PublishedAt) {
		t.Fatalf("services = %+v", svcs)
	}
	// Gone for longer than grace: down, need recreated.
	m.conn.Close()
	eventually(t, "service down after grace", func() bool {
		st, _, _ := needState(e, "w1")
		return len(e.srv.Services(lanmanagerFilter())) == 0 && st == adminapi.StatePending
	})
}

func TestReconnectReconcile(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"), tcpNeed("w3", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.publish("w1")
	m.publish("w2")
	m.conn.Close()
	eventually(t, "machine disconnected", func() bool { return !e.srv.Machines()[0].Connected })
	// w1 still runs, w2 died meanwhile, w3 is a pending need the master
	// runs (re-adopted), "ghost" is unknown (stopped).
	port := listener(t)
	h := hello("m1", "web")
	h.Running = []lanwire.RunningService{
		{Instance: "w1", Module: "web", PID: 10, Ports: lanwire.Ports{"tcp": port}},
		{Instance: "w3", Module: "web", PID: 11, Ports: lanwire.Ports{"tcp": port}},
		{Instance: "ghost", Module: "web", PID: 12},
	}
	m = e.connect(t, h)
	gotStop, gotApproved := false, false
	for !gotStop || !gotApproved {
		f := m.next()
		switch f.typ {
		case lanwire.TypeStop:
			if s := f.p.(*lanwire.Stop); s.Instance != "ghost" {
				t.Fatalf("stop %+v", s)
			}
			gotStop = true
		case lanwire.TypeApproved:
			if a := f.p.(*lanwire.Approved); a.Service.Instance != "w3" || a.Service.PID != 11 {
				t.Fatalf("approved %+v", a)
			}
			gotApproved = true
		case lanwire.TypeNeeds:
		default:
			t.Fatalf("unexpected %s %+v", f.typ, f.p)
		}
	}
	svcs := e.srv.Services(lanmanagerFilter())
	if len(svcs) != 2 || svcs[0].Instance != "w1" || svcs[1].Instance != "w3" {
		t.Fatalf("services = %+v", svcs)
	}
	if st, _, _ := needState(e, "w2"); st != adminapi.StatePending {
		t.Fatalf("w2 state = %q, want pending", st)
	}
}

func TestSessionReplaced(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"))
	old := e.connect(t, hello("m1", "web"))
	old.claim("w1")
	m := e.connect(t, hello("m1", "web"))
	old.expectClosed()
	// The old session's grant is void; the need is offered to the new one.
	m.expectNeeds("w1")
	m.claim("w1")
}

func TestRemoveNeed(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"), tcpNeed("w3", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.publish("w1")
	ctx := context.Background()
	if err := e.client.RemoveNeed(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if s := m.expect(lanwire.TypeStop).p.(*lanwire.Stop); s.Instance != "w1" {
		t.Fatalf("stop %+v", s)
	}
	m.claim("w2")
	if err := e.client.RemoveNeed(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	if s := m.expect(lanwire.TypeStop).p.(*lanwire.Stop); s.Instance != "w2" {
		t.Fatalf("stop %+v", s)
	}
	if err := e.client.RemoveNeed(ctx, "w3"); err != nil {
		t.Fatal(err)
	}
	m.expectNeeds()
	if n := e.srv.Needs(); len(n) != 0 {
		t.Fatalf("needs = %+v", n)
	}
}

func TestGrantTimeout(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(lanwire.Need{Instance: "w1", Module: "web", TimeoutMS: 300})
	m := e.connect(t, hello("m1", "web"))
	m.claim("w1")
	m.expectNeeds()
	// Expired, backed off, offered again.
	m.expectNeeds("w1")
	st, att, le := needState(e, "w1")
	if st != adminapi.StatePending || att != 1 || !strings.Contains(le, "expired") {
		t.Fatalf("need = %s %d %q", st, att, le)
	}
	// A late spawned for the expired grant is rejected.
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", PID: 3})
	if r := m.expect(lanwire.TypeRejected).p.(*lanwire.Rejected); !strings.Contains(r.Reason, "expired") {
		t.Fatalf("rejected %+v", r)
	}
}

func TestMalformedFrames(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"))
	m := e.connect(t, hello("m1", "web"))
	m.expectNeeds("w1", "w2")
	tests := []struct {
		name, frame, ref, msg string
	}{
		{"not json", `{"type":`, "", "envelope"},
		{"unknown type", `{"type":"nope","data":{}}`, "", "unknown type"},
		{"unknown field", `{"type":"claim","data":{"instance":"w1","x":1}}`, "claim", "unknown field"},
		{"server frame", `{"type":"grant","data":{"need":{"instance":"w1","module":"web"}}}`, "grant", "sent by the LAN manager"},
		{"second hello", `{"type":"hello","data":{"machine":"m1","address":"127.0.0.1","modules":[],"capacity":{"maxprocesses":0,"running":0}}}`, "hello", "already"},
		{"spawned ungranted", `{"type":"spawned","data":{"instance":"w1","pid":3}}`, "spawned", "not granted"},
		{"spawn_failed ungranted", `{"type":"spawn_failed","data":{"instance":"w1","error":"x"}}`, "spawn_failed", "not granted"},
		{"down unknown", `{"type":"down","data":{"instance":"zz","pid":3,"exitcode":0}}`, "down", "no service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m.t = t
			m.sendRaw([]byte(tt.frame))
			f := m.expect(lanwire.TypeError).p.(*lanwire.Error)
			if f.Ref != tt.ref || !strings.Contains(f.Message, tt.msg) {
				t.Fatalf("error = %+v, want ref %q and %q", f, tt.ref, tt.msg)
			}
		})
	}
	m.t = t
	if err := m.conn.WriteMessage(websocket.BinaryMessage, []byte("x")); err != nil {
		t.Fatal(err)
	}
	m.expect(lanwire.TypeError)
	// State unchanged and the link still works.
	if n := e.srv.Needs(); len(n) != 2 || n[0].State != adminapi.StatePending || n[0].Attempts != 0 {
		t.Fatalf("needs = %+v", n)
	}
	m.claim("w1")
	// A frame over the limit closes the link.
	m.sendRaw([]byte(`{"type":"claim","data":{"instance":"` + strings.Repeat("x", lanwire.MaxFrameSize) + `"}}`))
	m.expectClosed()
}

func TestBadFirstFrame(t *testing.T) {
	e := start(t, testConfig())
	tests := []struct{ name, frame string }{
		{"not hello", `{"type":"claim","data":{"instance":"w1"}}`},
		{"bad address", `{"type":"hello","data":{"machine":"m1","address":"nope","modules":[],"capacity":{"maxprocesses":0,"running":0}}}`},
		{"not json", `hello`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := e.rawMaster(t)
			m.sendRaw([]byte(tt.frame))
			m.expect(lanwire.TypeError)
			m.expectClosed()
		})
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
	for _, n := range e.srv.Needs() {
		got = append(got, n.Need.Instance)
	}
	if want := []string{"b1", "b2", "w1", "w2"}; !slices.Equal(got, want) {
		t.Fatalf("needs after the admin calls: %v, want %v", got, want)
	}
}

func TestReconcileConflicts(t *testing.T) {
	e := start(t, testConfig())
	e.addNeeds(tcpNeed("w1", "web"), tcpNeed("w2", "web"), lanwire.Need{Instance: "w3", Module: "web", Machine: &lanwire.MachineConstraint{ID: "m1"}}, tcpNeed("w4", "web"))
	m1 := e.connect(t, hello("m1", "web"))
	m1.publish("w1")
	m1.claim("w2")
	// m2 claims to run w1 (published on m1), w2 (granted to live m1), w3
	// (pinned to m1) and w4 as the wrong module: all stopped.
	h := hello("m2", "web")
	h.Running = []lanwire.RunningService{
		{Instance: "w1", Module: "web", PID: 2},
		{Instance: "w2", Module: "web", PID: 3},
		{Instance: "w3", Module: "web", PID: 4},
		{Instance: "w4", Module: "db", PID: 5},
	}
	m2 := e.connect(t, h)
	want := map[string]string{"w1": "runs on machine m1", "w2": "granted to machine m1", "w3": "constraint", "w4": "module"}
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
	if svcs := e.srv.Services(lanmanagerFilter()); len(svcs) != 1 || svcs[0].MachineID != "m1" {
		t.Fatalf("services = %+v", svcs)
	}
	if st, _, _ := needState(e, "w2"); st != adminapi.StateGranted {
		t.Fatalf("w2 = %q", st)
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
	m := e.connect(t, lanwire.Hello{MachineID: "m6", Address: "::1", Modules: []string{"web"}})
	m.claim("w1")
	m.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: "w1", PID: 9, Ports: lanwire.Ports{"tcp": uint16(ln.Addr().(*net.TCPAddr).Port)}})
	if rec := m.expect(lanwire.TypeApproved).p.(*lanwire.Approved).Service; rec.Address != "::1" {
		t.Fatalf("record = %+v", rec)
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	cfg := testConfig()
	cfg.CrashLoopLimit = 2
	cfg.RetryBackoffInitial = 300 * time.Millisecond
	cfg.RetryBackoffMax = 300 * time.Millisecond
	e := start(t, cfg)
	e.addNeeds(tcpNeed("w1", "web"))
	m := e.connect(t, hello("m1", "web"))
	// Downs within the limit are re-offered at once.
	for i := 0; i < cfg.CrashLoopLimit; i++ {
		m.publish("w1")
		m.send(lanwire.TypeDown, &lanwire.Down{Instance: "w1", PID: 4242, ExitCode: 1})
		m.expectNeeds("w1")
		if st, att, _ := needState(e, "w1"); st != adminapi.StatePending || att != 0 {
			t.Fatalf("down %d: state %q attempts %d, want pending with no backoff", i+1, st, att)
		}
	}
	// One more within the window is a crash loop: the need waits.
	m.publish("w1")
	m.send(lanwire.TypeDown, &lanwire.Down{Instance: "w1", PID: 4242, ExitCode: 1})
	eventually(t, "crash-loop backoff", func() bool {
		st, att, le := needState(e, "w1")
		return st == adminapi.StatePending && att == 1 && strings.Contains(le, "crash loop")
	})
	m.send(lanwire.TypeClaim, &lanwire.Claim{Instance: "w1"})
	if d := m.expect(lanwire.TypeDeny).p.(*lanwire.Deny); d.Instance != "w1" {
		t.Fatalf("deny for %q", d.Instance)
	}
	// After the backoff it is offered and can run again.
	m.expectNeeds("w1")
	m.publish("w1")

	// A need removed and added again starts with a clean record.
	if err := e.srv.RemoveNeed("w1"); err != nil {
		t.Fatal(err)
	}
	m.expect(lanwire.TypeStop)
	e.addNeeds(tcpNeed("w1", "web"))
	m.publish("w1")
	m.send(lanwire.TypeDown, &lanwire.Down{Instance: "w1", PID: 4242, ExitCode: 1})
	m.expectNeeds("w1")
	if _, att, _ := needState(e, "w1"); att != 0 {
		t.Fatalf("attempts %d after re-adding the need, want 0", att)
	}
}
