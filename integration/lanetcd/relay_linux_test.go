package lanetcd_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/internal/netns"
	"github.com/allex-go/allex/lanwire"
)

// TestPartitionedFromTheLeaderOnly: a master cut off from the leading LAN
// manager, but not from the standby, links through the standby, which
// relays it to the leader. It is never fenced: its children keep their
// pids past its lease, and the leader lists it connected throughout.
//
// Timeline (lease 10s, heartbeat 1s): at the cut the master's link goes
// silent; within 3 heartbeats the master drops it and dials the next
// address, the standby, which answers 503 naming the leader; the leader
// does not answer from here, so the master asks the standby to relay,
// and its hello reaches the leader with its running copies, which the
// leader re-adopts as they are. The master's lease was renewed all along
// but for those few seconds, well within the lease.
func TestPartitionedFromTheLeaderOnly(t *testing.T) {
	n := newNetLAN(t, "/lan7", 1, "a", "b", "m")
	la := n.startLM(t, "a")
	la.WaitOutput("elected: leading the LAN", 30*time.Second)
	lb := n.startLM(t, "b")
	a, m := n.lan.Host("a"), n.lan.Host("m")
	client := n.client(la)
	master := n.startMaster(t, "m", "m1", la, lb)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := client.AddNeeds(ctx, []lanwire.Need{{Instance: "d0", Module: "demo"}, {Instance: "d1", Module: "demo"}}); err != nil {
		t.Fatal(err)
	}
	pids := func() (map[string]int, error) {
		out, err := services(client)
		if err == nil && len(out) != 2 {
			err = fmt.Errorf("%d services, want 2", len(out))
		}
		return out, err
	}
	var before map[string]int
	e2e.Eventually(t, 30*time.Second, func() (err error) { before, err = pids(); return err })

	for _, x := range [][2]*netns.Host{{m, a}, {a, m}} {
		if err := x[0].Block(x[1].IP); err != nil {
			t.Fatal(err)
		}
	}
	cut := time.Now()
	master.WaitOutput("LAN link relayed by a standby LAN manager", 20*time.Second)
	t.Logf("the master linked through the standby %v after the cut", time.Since(cut))
	for time.Since(cut) < 15*time.Second { // past the master's 10s lease
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ms, err := client.Machines(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 1 || ms[0].Copies != 2 {
			t.Fatalf("machines on the leader during the cut: %+v", ms)
		}
		time.Sleep(500 * time.Millisecond)
	}
	after, err := pids()
	if err != nil || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("services after the cut: %v (%v), before %v", after, err, before)
	}
	if out := master.Output(); strings.Contains(out, "LAN lease running out") || strings.Contains(out, "lease ran out") {
		t.Fatalf("the master fenced during the cut:\n%s", out)
	}
}

// TestLeaderCutOffFromAll: the leader keeps etcd but loses every master
// and the standby. The masters' relays through the standby fail, the
// standby reports them, and the leader, hearing none of them, steps
// down; the standby leads and the masters link to it before their fence:
// no child restarted. (Timeline in cmd/allexlanmanager/unreached.go.)
func TestLeaderCutOffFromAll(t *testing.T) {
	n := newNetLAN(t, "/lan8", 1, "a", "b", "m1", "m2")
	la := n.startLM(t, "a")
	la.WaitOutput("elected: leading the LAN", 30*time.Second)
	lb := n.startLM(t, "b")
	masters := []*e2e.Proc{n.startMaster(t, "m1", "m1", la, lb), n.startMaster(t, "m2", "m2", lb, la)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.client(la).AddNeeds(ctx, []lanwire.Need{{Instance: "d0", Module: "demo"}, {Instance: "d1", Module: "demo"}, {Instance: "d2", Module: "demo"}}); err != nil {
		t.Fatal(err)
	}
	var before map[string]int
	e2e.Eventually(t, 30*time.Second, func() (err error) {
		before, err = services(n.client(la))
		if err == nil && len(before) != 3 {
			err = fmt.Errorf("%d services", len(before))
		}
		return err
	})
	a := n.lan.Host("a")
	for _, other := range []string{"b", "m1", "m2"} {
		h := n.lan.Host(other)
		for _, x := range [][2]*netns.Host{{a, h}, {h, a}} {
			if err := x[0].Block(x[1].IP); err != nil {
				t.Fatal(err)
			}
		}
	}
	cut := time.Now()
	la.WaitOutput("stepping down", 20*time.Second)
	lb.WaitOutput("elected: leading the LAN", 20*time.Second)
	t.Logf("the cut-off leader stepped down and the standby led %v after the cut", time.Since(cut))
	var after map[string]int
	e2e.Eventually(t, 20*time.Second, func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		ms, err := n.client(lb).Machines(ctx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if !m.Connected {
				return fmt.Errorf("machine %s not linked to the new leader", m.ID)
			}
		}
		after, err = services(n.client(lb))
		return err
	})
	t.Logf("both masters linked to the new leader %v after the cut", time.Since(cut))
	e2e.Eventually(t, 10*time.Second, func() error {
		if n := strings.Count(la.Output(), "standing by for the leadership"); n != 2 {
			return fmt.Errorf("the stepped-down leader stood by %d times, want 2 (again after stepping down)", n)
		}
		return nil
	})
	time.Sleep(time.Until(cut.Add(15 * time.Second))) // past the masters' lease
	after, err := services(n.client(lb))
	if err != nil || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("services after the cut: %v (%v), before %v", after, err, before)
	}
	for _, m := range masters {
		if out := m.Output(); strings.Contains(out, "LAN lease running out") {
			t.Fatalf("a master fenced:\n%s", out)
		}
	}
}
