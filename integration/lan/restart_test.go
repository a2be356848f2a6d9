//go:build !windows

package lan_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
)

// TestKilledNeedChildRestartsInPlace: a need child killed with kill -9 is
// restarted by its own master on the same ports; the LAN manager shows it
// down and then up with the new pid, and the other master never gets the
// need.
func TestKilledNeedChildRestartsInPlace(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	w := lan.Watch(t, "")
	m1 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, demoNeed("d1"))
	before := lan.WaitServices(t, wait, "d1")["d1"]
	m2 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m2"})
	lan.WaitConnected(t, wait, "m1", "m2")

	for round := range 3 {
		old := before.PID
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var after lanwire.ServiceRecord
		w.WaitFor(t, wait, func(evs []e2e.TimedEvent) error {
			down := false
			for _, ev := range evs {
				switch {
				case ev.Type == adminapi.EventDown && ev.Service.PID == old:
					down = true
				case down && ev.Type == adminapi.EventUp && ev.Service.Instance == "d1":
					after = ev.Service
					return nil
				}
			}
			return fmt.Errorf("round %d: d1 (pid %d) not down and up again", round, old)
		})
		if after.MachineID != "m1" || after.PID == old || fmt.Sprint(after.Ports) != fmt.Sprint(before.Ports) {
			t.Fatalf("round %d: republished as %+v, was %+v: want m1, same ports, new pid", round, after, before)
		}
		before = after
	}
	if _, ok := alive(t, m2)["d1"]; ok || strings.Contains(m2.Output(), "starting granted need") {
		t.Errorf("m2 ran d1 while m1 restarted it")
	}
	if n := strings.Count(m1.Output(), "starting granted need"); n != 1 {
		t.Errorf("m1 was granted d1 %d times, want once (restarts are local)", n)
	}
}

// TestLocalCrashLoopGivesNeedBack: a need child that keeps dying is
// restarted locally up to its module's limit; then the master gives the
// need back and the LAN manager re-offers it.
func TestLocalCrashLoopGivesNeedBack(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	w := lan.Watch(t, "")
	// Runs a little over a second (long enough to restart without
	// backoff), then dies: two local restarts, then the crash loop.
	crashy := `"crashy":{"command":"/bin/sh","args":["-c","sleep 1.1; exit 3"],"readiness":"none","restart":"always","maxrestarts":2}`
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1", Modules: crashy})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, lanwire.Need{Instance: "c1", Module: "crashy"})
	w.WaitFor(t, 4*wait, func(evs []e2e.TimedEvent) error {
		if n := countEvents(evs, adminapi.EventUp, "c1"); n < 4 {
			return fmt.Errorf("c1 up %d times, want 4 (first run, 2 local restarts, then granted again)", n)
		}
		return nil
	})
	out := m.Output()
	if !strings.Contains(out, "crash loop") {
		t.Errorf("master did not report the crash loop:\n%s", out)
	}
	if n := strings.Count(out, "starting granted need: instance=c1"); n < 2 {
		t.Errorf("need granted %d times, want it given back and granted again", n)
	}
}

func countEvents(evs []e2e.TimedEvent, typ, inst string) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == typ && ev.Service.Instance == inst {
			n++
		}
	}
	return n
}
