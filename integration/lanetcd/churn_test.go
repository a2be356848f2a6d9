//go:build linux

package lanetcd_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/procfs"
	"github.com/allex-go/allex/lanwire"
)

// doubles samples every live process every 50 ms and records the
// instances (named with prefix) seen with more than one live process.
type doubles struct {
	prefix string
	mu     sync.Mutex
	seen   map[string]int // instance -> most live processes at once
	last   map[string]int // instance -> live processes at the last scan
	scans  int
	stop   chan struct{}
	done   chan struct{}
}

func watchDoubles(prefix string) *doubles {
	d := &doubles{prefix: prefix, seen: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(d.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			d.scan()
			select {
			case <-d.stop:
				return
			case <-t.C:
			}
		}
	}()
	return d
}

func (d *doubles) scan() {
	pids, err := procfs.Pids()
	if err != nil {
		return
	}
	live := map[string]int{}
	for _, pid := range pids {
		st, err := procfs.ReadStat(pid)
		if err != nil || !st.Live() {
			continue
		}
		env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if inst, ok := strings.CutPrefix(string(kv), "ALLEX_INSTANCE="); ok && strings.HasPrefix(inst, d.prefix) {
				live[inst]++
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.scans++
	d.last = live
	for inst, n := range live {
		d.seen[inst] = max(d.seen[inst], n)
	}
}

// now returns the live processes per instance at the last scan.
func (d *doubles) now() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// result stops the sampling and returns the doubled instances and how
// many instances it saw.
func (d *doubles) result() (doubled []string, seen, scans int) {
	close(d.stop)
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	for inst, n := range d.seen {
		if n > 1 {
			doubled = append(doubled, fmt.Sprintf("%s×%d", inst, n))
		}
	}
	return doubled, len(d.seen), d.scans
}

// TestLeaderKillsDuringChurn: needs are added to whichever LAN manager
// leads (through any, by the standby's redirect) while the leader is
// killed three times; two masters run the needs. No instance ever has
// two live processes, no acknowledged need is lost, and the children
// that ran before the kills keep their pids.
func TestLeaderKillsDuringChurn(t *testing.T) {
	store, _ := etcdLAN(t, "/churn")
	lms := []*lm{startLM(t, store, "a"), startLM(t, store, "b")}
	lms[0].WaitOutput("elected: leading the LAN", 30*time.Second)
	startMasterAs(t, "m1", lms...)
	startMasterAs(t, "m2", lms[1], lms[0])
	check := watchDoubles("c")
	addNeeds(t, lms[0], "demo", "c-base", 4, time.Minute)
	before := published(t, lms[0], 4)

	var acked []string
	stop := make(chan struct{})
	churned := make(chan struct{})
	go func() {
		defer close(churned)
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			inst := fmt.Sprintf("c-churn%03d", k)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			// Through either LAN manager: a standby names the leader.
			err := lms[k%2].client().AddNeed(ctx, lanwire.Need{Instance: inst, Module: "demo"})
			cancel()
			if err == nil {
				acked = append(acked, inst)
			}
		}
	}()
	leader := 0
	for range 3 {
		time.Sleep(3 * time.Second)
		if err := lms[leader].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = lms[leader].Wait(10 * time.Second)
		lms[1-leader].WaitOutput("elected: leading the LAN", 30*time.Second)
		lms[leader].start(t)
		leader = 1 - leader
	}
	time.Sleep(2 * time.Second)
	close(stop)
	<-churned
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns, err := lms[leader].client().Needs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, n := range ns {
		have[n.Need.Instance] = true
	}
	for _, inst := range acked {
		if !have[inst] {
			t.Errorf("acknowledged need %s lost", inst)
		}
	}
	after := published(t, lms[leader], len(ns))
	for inst, pid := range before {
		if after[inst] != pid {
			t.Errorf("%s: pid %d after the kills, was %d", inst, after[inst], pid)
		}
	}
	doubled, seen, scans := check.result()
	t.Logf("%d needs acknowledged during 3 leader kills; %d process scans saw %d instances", len(acked), scans, seen)
	if seen < len(before) {
		t.Fatalf("the scans saw %d instances running, fewer than the %d published before the kills", seen, len(before))
	}
	if len(doubled) > 0 {
		t.Fatalf("instances with two live copies: %v", doubled)
	}
}
