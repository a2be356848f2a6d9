package lanetcd_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/etcdtest"
	"github.com/allex-go/allex/internal/netns"
	"github.com/allex-go/allex/lanwire"
)

var (
	flagSeed = flag.Uint64("lanetcd.seed", 0, "TestEtcdNemesis: seed of the faults' order and targets (0: from the clock; logged)")
	flagOps  = flag.Int("lanetcd.ops", 5, "TestEtcdNemesis: faults played (the first five are one of each kind)")
)

// settleBound is how long after a fault ends every acknowledged need must
// be back to one published copy: a master's lease (10 s) and margin, the
// port checks, with room.
const settleBound = 40 * time.Second

// TestEtcdNemesis plays seeded faults against a LAN of two LAN managers
// on three etcd members and two masters, in network namespaces, while
// needs are added: the leader killed (-9), paused past its lease, cut
// off from a master, or cut off from the masters and the standby (not
// from etcd); one etcd member killed. A scan of every process
// every 50 ms checks that no instance ever has two live copies; after
// each fault every acknowledged need must be back to exactly one
// published copy within settleBound, and every child that ran before the
// fault must run still, with its pid. Longer runs:
//
//	go test ./integration/lanetcd -run EtcdNemesis -v -lanetcd.ops 30 -timeout 30m
func TestEtcdNemesis(t *testing.T) {
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("nemesis seed %d (-lanetcd.seed to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	n := newNetLAN(t, "/nem", 3, "a", "b", "m1", "m2")
	lms := []*lm{n.startLM(t, "a"), n.startLM(t, "b")}
	lms[0].WaitOutput("elected: leading the LAN", 30*time.Second)
	n.startMaster(t, "m1", "m1", lms[0], lms[1])
	n.startMaster(t, "m2", "m2", lms[1], lms[0])
	check := watchDoubles("x")
	r := &nemesis{t: t, n: n, lms: lms, check: check}
	for range 6 {
		r.add()
	}
	r.settle("setup")
	kinds := []string{"kill-leader", "pause-leader", "cut-master", "cut-leader", "kill-etcd"}
	for i := range *flagOps {
		kind := kinds[i%len(kinds)] // each kind once first
		if i >= len(kinds) {
			kind = kinds[rng.IntN(len(kinds))]
		}
		before := r.pids()
		began := time.Now()
		r.play(kind, rng)
		r.settle(fmt.Sprintf("%s (op %d)", kind, i+1))
		t.Logf("op %d %s: back to one copy each %v after it began", i+1, kind, time.Since(began).Round(time.Millisecond))
		// No fault here ends a master or cuts it off from every LAN
		// manager: no child is restarted.
		after := r.pids()
		for inst, pid := range before {
			if after[inst] != pid {
				t.Errorf("op %d %s: %s restarted (pid %d, was %d)", i+1, kind, inst, after[inst], pid)
			}
		}
	}
	doubled, seen, scans := check.result()
	t.Logf("%d needs acknowledged; %d process scans saw %d instances", len(r.acked), scans, seen)
	if len(doubled) > 0 {
		t.Fatalf("instances with two live copies: %v", doubled)
	}
}

type nemesis struct {
	t     *testing.T
	n     *netLAN
	lms   []*lm
	check *doubles
	acked []string
}

// leader returns the LAN manager that answers /healthz "ok".
func (r *nemesis) leader() *lm {
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, l := range r.lms {
			if r.health(l) == "ok" {
				return l
			}
		}
	}
	r.t.Fatal("no LAN manager leads")
	return nil
}

func (r *nemesis) health(l *lm) string {
	c := l.httpClient(time.Second)
	defer c.CloseIdleConnections()
	resp, err := c.Get(l.url + "/healthz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// add adds one need through either LAN manager, recording it once
// acknowledged.
func (r *nemesis) add() {
	inst := fmt.Sprintf("x%03d", len(r.acked))
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		for _, l := range r.lms {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			err := r.n.client(l).AddNeed(ctx, lanwire.Need{Instance: inst, Module: "demo"})
			cancel()
			if err == nil || strings.Contains(err.Error(), "already") {
				r.acked = append(r.acked, inst)
				return
			}
		}
	}
	r.t.Fatalf("need %s not acknowledged within a minute", inst)
}

// play runs one fault to its end, adding a need meanwhile.
func (r *nemesis) play(kind string, rng *rand.Rand) {
	t := r.t
	switch kind {
	case "kill-leader":
		l := r.leader()
		if err := l.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = l.Wait(10 * time.Second)
		r.add()
		r.n.run(t, l)
	case "pause-leader":
		l := r.leader()
		if err := l.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		r.add()
		time.Sleep(5 * time.Second) // past its 2 s lease
		if err := l.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if err := l.Wait(20 * time.Second); err == nil || !strings.Contains(l.Output(), "lost the leadership") {
			t.Fatalf("the paused leader after SIGCONT: exit %v", err)
		}
		r.n.run(t, l)
	case "cut-master":
		l := r.leader()
		m := r.n.lan.Host([]string{"m1", "m2"}[rng.IntN(2)])
		for _, x := range [][2]*netns.Host{{m, l.host}, {l.host, m}} {
			if err := x[0].Block(x[1].IP); err != nil {
				t.Fatal(err)
			}
		}
		r.add()
		time.Sleep(15 * time.Second) // past the master's lease
		for _, x := range [][2]*netns.Host{{m, l.host}, {l.host, m}} {
			if err := x[0].Unblock(x[1].IP); err != nil {
				t.Fatal(err)
			}
		}
	case "cut-leader":
		// Etcd still reaches it: it steps down for the masters the
		// standby reports it cannot relay to it.
		l := r.leader()
		var blocks [][2]*netns.Host
		for _, other := range append([]*lm{}, r.lms...) {
			if other != l {
				blocks = append(blocks, [2]*netns.Host{l.host, other.host}, [2]*netns.Host{other.host, l.host})
			}
		}
		for _, name := range []string{"m1", "m2"} {
			m := r.n.lan.Host(name)
			blocks = append(blocks, [2]*netns.Host{l.host, m}, [2]*netns.Host{m, l.host})
		}
		for _, x := range blocks {
			if err := x[0].Block(x[1].IP); err != nil {
				t.Fatal(err)
			}
		}
		r.add()
		time.Sleep(15 * time.Second)
		for _, x := range blocks {
			if err := x[0].Unblock(x[1].IP); err != nil {
				t.Fatal(err)
			}
		}
	case "kill-etcd":
		e := r.n.etcd[rng.IntN(len(r.n.etcd))]
		e.Kill()
		r.add()
		time.Sleep(3 * time.Second)
		e.Restart()
		cli := etcdtest.ClientVia(t, []string{e.Client}, func(ctx context.Context, addr string) (net.Conn, error) {
			return r.n.from.DialContext(ctx, "tcp", addr)
		})
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := cli.Get(ctx, "health")
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("etcd member %s not back within 30s: %v", e.Name, err)
			}
		}
	}
}

// settle waits until every acknowledged need has exactly one published
// copy and one live process, held for a second.
func (r *nemesis) settle(after string) {
	r.t.Helper()
	var held time.Time
	var err error
	for end := time.Now().Add(settleBound); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if err = r.oneEach(); err != nil {
			held = time.Time{}
			continue
		}
		if held.IsZero() {
			held = time.Now()
		}
		if time.Since(held) >= time.Second {
			return
		}
	}
	r.t.Fatalf("after %s: not back to one copy each within %v: %v", after, settleBound, err)
}

// pids returns the published services' pids by instance.
func (r *nemesis) pids() map[string]int {
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if svcs, err := services(r.n.client(r.leader())); err == nil {
			return svcs
		}
	}
	r.t.Fatal("cannot list the services")
	return nil
}

// oneEach says why not every acknowledged need is published once.
func (r *nemesis) oneEach() error {
	svcs, err := services(r.n.client(r.leader()))
	if err != nil {
		return err
	}
	for _, inst := range r.acked {
		if svcs[inst] == 0 {
			return fmt.Errorf("%s not published", inst)
		}
	}
	if len(svcs) != len(r.acked) {
		return fmt.Errorf("%d services published, %d needs", len(svcs), len(r.acked))
	}
	live := r.check.now()
	for _, inst := range r.acked {
		if live[inst] != 1 {
			return fmt.Errorf("%s has %d live processes", inst, live[inst])
		}
	}
	return nil
}
