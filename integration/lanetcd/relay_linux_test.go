package lanetcd_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/internal/etcdtest"
	"github.com/allex-go/allex/internal/netns"
	"github.com/allex-go/allex/lanmanager/adminclient"
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
	lan := netns.NewLAN(t, "e", "a", "b", "m")
	e, a, b, m := lan.Host("e"), lan.Host("a"), lan.Host("b"), lan.Host("m")
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return e.DialContext(ctx, "tcp", addr) }
	etcdtest.ClusterAt(t, []etcdtest.Where{{IP: e.IP, Command: e.Command}}, dial)
	store := "etcd://" + net.JoinHostPort(e.IP, "2379") + "/lan7"
	startIn := func(h *netns.Host) *lm {
		dir := e2e.ShortDir(t)
		addr := net.JoinHostPort(h.IP, "23552")
		l := &lm{url: "http://" + addr, dir: dir}
		cmd := h.Command(e2e.Bins.LAN, "-addr", addr, "-advertise", l.url, "-data", filepath.Join(dir, "data"),
			"-token", token, "-store", store, "-log-level", "debug")
		cmd.Dir = dir
		l.Proc = e2e.StartCmd(t, cmd)
		return l
	}
	la := startIn(a)
	la.WaitOutput("elected: leading the LAN", 30*time.Second)
	lb := startIn(b)
	lb.WaitOutput("standing by for the leadership", 30*time.Second)
	client := adminclient.New(la.url, token)
	client.HTTP = e.HTTPClient(0)

	dir := e2e.ShortDir(t)
	e2e.WriteFile(t, dir, "allexmasterconfig.json", fmt.Sprintf(
		`{"lanmanageraddress":"%s:23552,%s:23552","token":%q,"machineid":"m1","address":%q,`+
			`"portrangestart":{"tcp":15000,"http":16000,"ws":17000},"socket":%q,"statedir":%q,"modules":{%s}}`,
		a.IP, b.IP, token, m.IP, filepath.Join(dir, "m.sock"), filepath.Join(dir, "state"), e2e.DemoModule("demo")))
	cmd := m.Command(e2e.Bins.Master, "-log-level", "debug")
	cmd.Dir = dir
	master := e2e.StartCmd(t, cmd)
	master.WaitOutput("allexmaster running", 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := client.AddNeeds(ctx, []lanwire.Need{{Instance: "d0", Module: "demo"}, {Instance: "d1", Module: "demo"}}); err != nil {
		t.Fatal(err)
	}
	pids := func() (map[string]int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svcs, err := client.Services(ctx, "", "")
		out := map[string]int{}
		for _, s := range svcs {
			out[s.Instance] = s.PID
		}
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
