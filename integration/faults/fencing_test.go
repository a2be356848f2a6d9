//go:build linux

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// stateFiles maps each file at the top of a state dir to its content and
// modification time: what a second master must not touch.
func stateFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		name := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fmt.Sprintf("%q mtime %s", b, fi.ModTime().Format(time.RFC3339Nano))
	}
	return out
}

// TestSecondMasterOnLiveStateDir: an allexmaster given the state dir of a
// live master (with its own socket) exits non-zero at once, saying the
// dir is in use and by whom, and changes nothing: the live master's
// children, journal, identity and keeper are as they were, and the LAN
// manager never hears of the second.
func TestSecondMasterOnLiveStateDir(t *testing.T) {
	orphans := e2e.NewFaultOrphans(t)
	lan := e2e.StartFaultLAN(t, e2e.ShortDir(t), 0, token)
	m1 := e2e.StartFaultMaster(t, lan, "m1", 10, 0)
	names := addNeeds(t, lan, "sd", 0, 3)
	before := waitServices(t, lan, setOf(names...), 90*time.Second)
	orphans.Add(pidsOf(before)...)
	state := filepath.Join(m1.Dir, "state")
	files := stateFiles(t, state)
	if _, ok := files["children.jsonl"]; !ok {
		t.Fatalf("no journal in the state dir: %v", files)
	}
	kids, err := liveNeedChildren(t, m1)
	if err != nil {
		t.Fatal(err)
	}
	keeper := e2e.FaultKeeperPID(state)

	// The second master's config is a whole one of its own (machine id,
	// socket, ports) but for the state dir.
	dir := e2e.ShortDir(t)
	var cfg map[string]any
	if err := json.Unmarshal([]byte(e2e.FaultMasterConfig(dir, "m2", lan.Port, lan.Token, e2e.FreeBlock(t, 30), 10, 0)), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["statedir"] = state
	b, _ := json.Marshal(cfg)
	e2e.WriteFile(t, dir, "allexmasterconfig.json", string(b))
	second := e2e.Start(t, dir, e2e.Bins.Master)
	err = second.Wait(30 * time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("second master on a live state dir: %v, want a non-zero exit\n%s", err, second.Output())
	}
	out := second.Output()
	for _, want := range []string{state, "state dir in use by another allexmaster", fmt.Sprintf("pid %d", m1.Cmd.Process.Pid)} {
		if !strings.Contains(out, want) {
			t.Errorf("second master's error lacks %q:\n%s", want, out)
		}
	}
	t.Logf("second master: %s", strings.TrimSpace(out))

	if _, err := os.Lstat(filepath.Join(dir, "m.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("second master made its socket: %v", err)
	}
	if now := stateFiles(t, state); fmt.Sprint(now) != fmt.Sprint(files) {
		t.Errorf("state dir changed:\nbefore %v\nafter  %v", files, now)
	}
	now, err := liveNeedChildren(t, m1)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(now) != fmt.Sprint(kids) {
		t.Errorf("live master's children changed: %v -> %v", kids, now)
	}
	for inst, s := range before {
		if !e2e.FaultPIDAlive(s.PID) {
			t.Errorf("child %s (pid %d) died", inst, s.PID)
		}
	}
	if k := e2e.FaultKeeperPID(state); k == 0 || k != keeper {
		t.Errorf("keeper was pid %d, now %d", keeper, k)
	}
	if err := linkConnected(t, m1.Socket); err != nil {
		t.Error(err)
	}
	svcs, err := services(lan)
	if err != nil {
		t.Fatal(err)
	}
	for inst, s := range before {
		if svcs[inst].PID != s.PID || svcs[inst].MachineID != "m1" {
			t.Errorf("service %s was m1 pid %d, now %+v", inst, s.PID, svcs[inst])
		}
	}
	if n := strings.Count(lan.Output(), "master connected"); n != 1 {
		t.Errorf("LAN manager logged %d master connections, want m1's only", n)
	}
}

// TestTwoMastersOneSocket: two allexmasters started at the same moment on
// one socket, each with its own state dir: exactly one keeps running and
// answers on the socket; the other exits non-zero saying the socket is in
// use. Twenty tries, the first started alternating.
func TestTwoMastersOneSocket(t *testing.T) {
	const tries = 20
	base := e2e.FreeBlock(t, 30)
	firstWins := 0
	for try := range tries {
		dir := e2e.ShortDir(t)
		socket := filepath.Join(dir, "m.sock")
		var subs [2]string
		for i := range subs {
			subs[i] = filepath.Join(dir, string(rune('a'+i)))
			if err := os.Mkdir(subs[i], 0o755); err != nil {
				t.Fatal(err)
			}
			// No LAN manager and no children: the ranges are only parsed.
			e2e.WriteFile(t, subs[i], "allexmasterconfig.json", e2e.MasterConfig(subs[i], base, 10, ""))
		}
		var ps [2]*e2e.Proc
		first := try % 2
		ps[first] = e2e.Start(t, subs[first], e2e.Bins.Master, "-socket", socket)
		ps[1-first] = e2e.Start(t, subs[1-first], e2e.Bins.Master, "-socket", socket)

		loser := -1
		e2e.Eventually(t, 30*time.Second, func() error {
			for i, p := range ps {
				if done, _ := p.Exited(); done {
					loser = i
					return nil
				}
			}
			return errors.New("both masters still run on one socket")
		})
		winner := ps[1-loser]
		_, err := ps[loser].Exited()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("try %d: losing master ended with %v, want a non-zero exit\n%s", try, err, ps[loser].Output())
		}
		if out := ps[loser].Output(); !strings.Contains(out, socket) || !strings.Contains(out, "in use") {
			t.Fatalf("try %d: losing master's error does not say the socket is in use:\n%s", try, out)
		}
		winner.WaitOutput("allexmaster running", 30*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := e2e.Client(t, socket).Status(ctx, &allexv1.StatusRequest{})
		cancel()
		if err != nil {
			t.Fatalf("try %d: status on the socket: %v", try, err)
		}
		if int(st.GetPid()) != winner.Cmd.Process.Pid {
			t.Fatalf("try %d: socket answered by pid %d, the running master is %d", try, st.GetPid(), winner.Cmd.Process.Pid)
		}
		if done, err := winner.Exited(); done {
			t.Fatalf("try %d: the winning master exited too (%v):\n%s", try, err, winner.Output())
		}
		if err := winner.Stop(30 * time.Second); err != nil {
			t.Fatalf("try %d: winning master's exit: %v\n%s", try, err, winner.Output())
		}
		if 1-loser == first {
			firstWins++
		}
	}
	t.Logf("%d tries: the master started first won %d times, the one started second %d", tries, firstWins, tries-firstWins)
}

// TestSameMachineIDTakenOverAfterFence: a second master given the machine
// id of a live one (with its own state dir, so its own identity, and its
// own socket) is refused by the LAN manager; both logs say why, naming
// the machine id, and it runs nothing while the first lives. Once the
// first is killed -9 the second takes the machine id over, but only after
// the first's fence (exit fence + margin after its link ended), and then
// runs each need exactly once.
func TestSameMachineIDTakenOverAfterFence(t *testing.T) {
	exitFence, margin := e2e.TestFence(e2e.TestLease), e2e.TestMargin
	orphans := e2e.NewFaultOrphans(t)
	lan := e2e.StartFaultLAN(t, e2e.ShortDir(t), 0, token)
	first := e2e.StartFaultMaster(t, lan, "dup", 10, 0)
	names := addNeeds(t, lan, "id", 0, 3)
	before := waitServices(t, lan, setOf(names...), 90*time.Second)
	orphans.Add(pidsOf(before)...)
	second := e2e.StartFaultMaster(t, lan, "dup", 10, 0)
	watch := watchSeen(t, before, map[string]string{first.Socket: "first", second.Socket: "second"})

	second.WaitOutput("LAN manager refused this master", 60*time.Second)
	if out := second.Output(); !strings.Contains(out, `machine id \"dup\" belongs to another master`) || !strings.Contains(out, "machineid") {
		t.Errorf("second master's log does not say its machine id is taken:\n%s", out)
	}
	if out := lan.Output(); !strings.Contains(out, "refused a master: machine id in use by another identity") || !strings.Contains(out, "machine=dup") {
		t.Errorf("LAN manager's log does not say it refused a second master as dup:\n%s", out)
	}
	// However the second retries meanwhile, it takes nothing.
	time.Sleep(10 * e2e.TestHeartbeat)
	if ps, err := e2e.FaultPSList(t, second.Socket); err != nil || len(ps) != 0 {
		t.Errorf("refused master runs %+v (%v)", ps, err)
	}
	if err := linkConnected(t, second.Socket); err == nil {
		t.Error("refused master reports its link connected")
	}
	svcs, err := services(lan)
	if err != nil {
		t.Fatal(err)
	}
	for inst, s := range before {
		if svcs[inst].PID != s.PID {
			t.Errorf("service %s was pid %d, now %+v", inst, s.PID, svcs[inst])
		}
	}

	killed := e2e.KillAlone(t, first.Proc)
	// Polled over gRPC rather than allexctl: every 20ms.
	client := e2e.Client(t, second.Socket)
	var takeover time.Duration
	deadline := time.Now().Add(60 * time.Second)
	for takeover == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := client.Status(ctx, &allexv1.StatusRequest{})
		cancel()
		switch {
		case err == nil && st.GetLanLinkState() == "connected":
			takeover = time.Since(killed)
		case time.Now().After(deadline):
			t.Fatalf("second master not connected 60s after the first was killed (%v, %v)", st.GetLanLinkState(), err)
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
	if takeover < exitFence+margin {
		t.Errorf("second master took the machine id over %v after the first was killed, before its fence (exit fence %v + margin %v)",
			takeover, exitFence, margin)
	}
	// The fence forgot the first master, so the second is welcomed as a
	// new machine dup.
	if out := lan.Output(); !strings.Contains(out, "machine fenced: its copies end: machine=dup") || strings.Count(out, "master connected: machine=dup") != 2 {
		t.Errorf("LAN manager did not log the first master's fence and the second's welcome:\n%s", out)
	}
	replacedOnce(t, lan, before, second, 60*time.Second, orphans, watch)
	var started time.Duration
	for _, inst := range names {
		ps := watch.Procs("second", inst)
		if len(ps) != 1 {
			t.Errorf("second master ran %s %d times, want once: %+v", inst, len(ps), ps)
			continue
		}
		s := ps[0].First.Sub(killed)
		if s < exitFence+margin {
			t.Errorf("second master started %s %v after the kill, before the first's fence", inst, s)
		}
		started = max(started, s)
	}
	t.Logf("first master's children last seen alive %v after its kill; second master connected as dup after %v, ran every need after %v (exit fence %v, margin %v; it retries 5-10s after a refusal)",
		lastSeen(watch, "first", before, killed).Round(time.Millisecond), takeover.Round(time.Millisecond), started.Round(time.Millisecond), exitFence, margin)
}
