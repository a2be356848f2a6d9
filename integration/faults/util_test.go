//go:build linux

package faults

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanwire"
)

const token = "fault-token"

func demoNeed(instance string) lanwire.Need {
	return lanwire.Need{Instance: instance, Module: "demo", Protocols: []string{"tcp"}}
}

func ctx30() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// addNeeds adds n demo needs named prefix-000.. and returns their names.
func addNeeds(t *testing.T, lan *e2e.FaultLAN, prefix string, from, n int) []string {
	t.Helper()
	var names []string
	for i := from; i < from+n; i++ {
		name := fmt.Sprintf("%s-%03d", prefix, i)
		ctx, cancel := ctx30()
		err := lan.Admin.AddNeed(ctx, demoNeed(name))
		cancel()
		if err != nil {
			t.Fatalf("add need %s: %v", name, err)
		}
		names = append(names, name)
	}
	return names
}

func setOf(names ...string) map[string]bool {
	s := map[string]bool{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

// diff describes how got differs from want, "" when equal.
func diff(want, got map[string]bool) string {
	var missing, extra []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return fmt.Sprintf("missing %d %s, unexpected %d %s", len(missing), clip(missing), len(extra), clip(extra))
}

func clip(s []string) string {
	if len(s) > 10 {
		return strings.Join(s[:10], ",") + ",..."
	}
	return strings.Join(s, ",")
}

// services returns the published services by instance, failing on a
// duplicate record.
func services(lan *e2e.FaultLAN) (map[string]lanwire.ServiceRecord, error) {
	ctx, cancel := ctx30()
	defer cancel()
	list, err := lan.Admin.Services(ctx, "", "")
	if err != nil {
		return nil, err
	}
	out := map[string]lanwire.ServiceRecord{}
	for _, s := range list {
		if _, dup := out[s.Instance]; dup {
			return nil, fmt.Errorf("service %s listed twice", s.Instance)
		}
		out[s.Instance] = s
	}
	return out, nil
}

// waitServices polls until exactly want is published, and returns it.
func waitServices(t *testing.T, lan *e2e.FaultLAN, want map[string]bool, d time.Duration) map[string]lanwire.ServiceRecord {
	t.Helper()
	return waitServicesOn(t, lan, want, "", d)
}

// waitServicesOn polls until exactly want is published, all on machine id
// (any machine for ""), and returns it.
func waitServicesOn(t *testing.T, lan *e2e.FaultLAN, want map[string]bool, id string, d time.Duration) map[string]lanwire.ServiceRecord {
	t.Helper()
	var got map[string]lanwire.ServiceRecord
	e2e.Eventually(t, d, func() error {
		var err error
		got, err = services(lan)
		if err != nil {
			return err
		}
		if s := diff(want, keys(got)); s != "" {
			return fmt.Errorf("services: %s", s)
		}
		if id != "" {
			return allOn(got, id)
		}
		return nil
	})
	return got
}

// linkConnected says why the master on socket is not linked to its LAN
// manager, or nil when it is.
func linkConnected(t *testing.T, socket string) error {
	st, err := e2e.FaultLinkState(t, socket)
	if err != nil {
		return err
	}
	if st != "connected" {
		return fmt.Errorf("master link is %s", st)
	}
	return nil
}

func keys[V any](m map[string]V) map[string]bool {
	s := map[string]bool{}
	for k := range m {
		s[k] = true
	}
	return s
}

// needStates maps need instance to its state.
func needStates(lan *e2e.FaultLAN) (map[string]string, error) {
	ctx, cancel := ctx30()
	defer cancel()
	list, err := lan.Admin.Needs(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range list {
		out[n.Need.Instance] = n.State
	}
	return out, nil
}

// liveNeedChildren maps need id to the pid of the master's live child for
// it, failing on two live children for one need.
func liveNeedChildren(t *testing.T, m *e2e.FaultMaster) (map[string]int, error) {
	t.Helper()
	ps, err := e2e.FaultPSList(t, m.Socket)
	if err != nil {
		return nil, err
	}
	return needChildren(m, ps)
}

func needChildren(m *e2e.FaultMaster, ps []e2e.FaultPS) (map[string]int, error) {
	out := map[string]int{}
	for _, p := range ps {
		if p.NeedID == "" || !p.Live() {
			continue
		}
		if _, dup := out[p.NeedID]; dup {
			return nil, fmt.Errorf("%s runs need %s twice", m.ID, p.NeedID)
		}
		out[p.NeedID] = p.Pid
	}
	return out, nil
}

// checkPlacement verifies that the masters' live need children are
// exactly the published services, each on the master and with the pid
// the registry names, and no need on two masters.
func checkPlacement(t *testing.T, svcs map[string]lanwire.ServiceRecord, masters ...*e2e.FaultMaster) error {
	t.Helper()
	where := map[string]string{}
	for _, m := range masters {
		ps, err := e2e.FaultPSList(t, m.Socket)
		if err != nil {
			return err
		}
		kids, err := needChildren(m, ps)
		if err != nil {
			return err
		}
		live := 0
		for _, p := range ps {
			if p.Live() {
				live++
			}
		}
		// A crashed or removed child must give its port back.
		use, err := e2e.FaultPortsInUse(t, m.Socket)
		if err != nil {
			return err
		}
		if n := use["PROTOCOL_TCP"]; n != live {
			return fmt.Errorf("%s holds %d tcp ports for %d live children", m.ID, n, live)
		}
		// No orphan of an earlier run of this master may survive.
		for _, pid := range e2e.FaultProcsOf(m.Socket) {
			if !slices.ContainsFunc(ps, func(p e2e.FaultPS) bool { return p.Pid == pid && p.Live() }) {
				return fmt.Errorf("pid %d was started for %s but is none of its live children", pid, m.ID)
			}
		}
		for inst, pid := range kids {
			if other, ok := where[inst]; ok {
				return fmt.Errorf("need %s runs on %s and %s", inst, other, m.ID)
			}
			where[inst] = m.ID
			sv, ok := svcs[inst]
			if !ok {
				return fmt.Errorf("%s runs %s (pid %d), which is not published", m.ID, inst, pid)
			}
			if sv.MachineID != m.ID || sv.PID != pid {
				return fmt.Errorf("%s runs %s as pid %d; registry says %s pid %d", m.ID, inst, pid, sv.MachineID, sv.PID)
			}
		}
	}
	for inst, sv := range svcs {
		if where[inst] == "" {
			return fmt.Errorf("service %s (machine %s pid %d) has no live child on any master", inst, sv.MachineID, sv.PID)
		}
	}
	return nil
}

// checkServing verifies every service's pid is alive and its port accepts.
func checkServing(svcs map[string]lanwire.ServiceRecord) error {
	for inst, sv := range svcs {
		if !e2e.FaultPIDAlive(sv.PID) {
			return fmt.Errorf("service %s: pid %d is not alive", inst, sv.PID)
		}
		if !e2e.FaultPortAccepts(int(sv.Ports["tcp"])) {
			return fmt.Errorf("service %s: tcp port %d does not accept", inst, sv.Ports["tcp"])
		}
	}
	return nil
}

// addOrExists adds a need, counting "already a need or service" as done:
// an earlier attempt may have been applied before its answer was lost.
func addOrExists(ctx context.Context, c *adminclient.Client, n lanwire.Need) error {
	err := c.AddNeed(ctx, n)
	if errors.Is(err, adminclient.ErrConflict) {
		return nil
	}
	return err
}

// watchDowns collects the "down" events of the registry until the test
// ends; the returned func gives the instances that went down so far. Call
// it while services exist: the stream opens with one "up" per service.
func watchDowns(t *testing.T, lan *e2e.FaultLAN) func() []string {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	started := make(chan struct{})
	var mu sync.Mutex
	var downs []string
	go func() {
		defer close(done)
		var once sync.Once
		defer once.Do(func() { close(started) })
		c := adminclient.New(lan.URL(), lan.Token)
		_ = c.Watch(ctx, "", func(ev adminapi.ServiceEvent) error {
			once.Do(func() { close(started) })
			if ev.Type == adminapi.EventDown {
				mu.Lock()
				downs = append(downs, ev.Service.Instance)
				mu.Unlock()
			}
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("service watch did not start")
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), downs...)
	}
}
