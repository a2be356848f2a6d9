//go:build linux

package nemesis

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/procfs"
)

// The checker's bookkeeping on made-up samples; TestNemesis is its test
// with real processes.

func TestJudge(t *testing.T) {
	sups := map[string]supView{
		"/m1": {label: "m1", ip: "10.200.0.2", healthy: true},
		"/m2": {label: "m2", ip: "10.200.0.3", healthy: false},
	}
	reg := registry{Services: map[string]service{
		"a": {Instance: "a", Address: "10.200.0.2", PID: 10},
		"b": {Instance: "b", Address: "10.200.0.3", PID: 20},
	}}
	one := func(pid int, sock string) []liveCopy { return []liveCopy{{procKey{pid, 1}, sock}} }
	for _, tc := range []struct {
		name      string
		copies    map[string][]liveCopy
		reg       registry
		ok, avail bool
		why       string
	}{
		{"one published copy", map[string][]liveCopy{"a": one(10, "/m1")}, reg, true, true, ""},
		{"two copies", map[string][]liveCopy{"a": append(one(10, "/m1"), one(11, "/m2")...)}, reg, false, true, "a: 2 copies"},
		{"copy on an unhealthy master", map[string][]liveCopy{"b": one(20, "/m2")}, reg, false, false, "master down, frozen or cut"},
		{"published pid is another", map[string][]liveCopy{"a": one(12, "/m1")}, reg, false, false, "pid 10 on 10.200.0.2"},
		{"no copy", map[string][]liveCopy{}, reg, false, false, "a: 0 copies"},
		{"registry down", map[string][]liveCopy{"a": one(10, "/m1")}, registry{Err: "refused"}, false, false, "registry: refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acked := []string{"a"}
			if _, ok := tc.copies["b"]; ok {
				acked = []string{"b"}
			}
			ok, avail, why := judge(acked, tc.copies, tc.reg, sups)
			if ok != tc.ok || avail != tc.avail || !strings.Contains(why, tc.why) {
				t.Fatalf("judge: ok %v avail %v why %q; want %v %v %q", ok, avail, why, tc.ok, tc.avail, tc.why)
			}
		})
	}
}

func TestRecovery(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	marks := []mark{
		{At: at(0), OK: true},
		{At: at(10), OK: false}, // the fault
		{At: at(12), OK: true},  // a blip too short to count
		{At: at(12.5), OK: false},
		{At: at(15), OK: true},
	}
	now := at(30)
	if d, ok := recoveryIn(marks, at(9), at(9), time.Second, now, okPick); !ok || d != 6*time.Second {
		t.Fatalf("from the fault: %s %v, want 6s", d, ok)
	}
	// Not ok already at the start: counted from the start.
	if d, ok := recoveryIn(marks, at(11), at(11), time.Second, now, okPick); !ok || d != 4*time.Second {
		t.Fatalf("disturbed at the start: %s %v, want 4s", d, ok)
	}
	// Never disturbed: 0, once the end is stable behind.
	if d, ok := recoveryIn(marks, at(20), at(25), time.Second, now, okPick); !ok || d != 0 {
		t.Fatalf("undisturbed: %s %v, want 0", d, ok)
	}
	if _, ok := recoveryIn(marks, at(20), at(25), time.Second, at(25.5), okPick); ok {
		t.Fatal("undisturbed judged before its end was a second old")
	}
	if _, ok := recoveryIn(marks[:4], at(9), at(9), time.Second, now, okPick); ok {
		t.Fatal("recovered on a 0.5s blip")
	}
	// The open last run counts once it has lasted stable.
	if _, ok := recoveryIn(marks, at(9), at(9), time.Second, at(15.5), okPick); ok {
		t.Fatal("recovered before the last run lasted a second")
	}
	if got := notOKIn(marks, at(5), now); got != 4500*time.Millisecond {
		t.Fatalf("not ok for %s, want 4.5s", got)
	}
}

func TestOverlapAndMissingBookkeeping(t *testing.T) {
	c := newChecker("x-", nil, sampleEvery)
	t0 := time.Unix(1000, 0)
	two := map[string][]liveCopy{"x-1": {{procKey{1, 1}, "/s"}, {procKey{2, 1}, "/t"}}}
	c.trackOverlaps(t0, two)
	c.trackOverlaps(t0.Add(time.Second), two)
	c.trackOverlaps(t0.Add(2*time.Second), map[string][]liveCopy{"x-1": {{procKey{2, 1}, "/t"}}})
	if len(c.overlaps) != 1 || c.overlaps[0].duration() != 2*time.Second || len(c.overlaps[0].Copies) != 2 {
		t.Fatalf("overlaps %+v", c.overlaps)
	}
	if c.stats.DoubledSamples != 2 || len(c.open) != 0 {
		t.Fatalf("doubled samples %d, open %d", c.stats.DoubledSamples, len(c.open))
	}

	c.acked["x-1"] = t0
	c.acked["x-2"] = t0.Add(5 * time.Second) // acknowledged after the read began: not judged by it
	c.trackMissing(t0.Add(time.Second), map[string]string{})
	c.trackMissing(t0.Add(3*time.Second), map[string]string{"x-1": "satisfied"})
	if len(c.missing) != 1 || c.missing[0].Instance != "x-1" || c.missing[0].End != t0.Add(3*time.Second) {
		t.Fatalf("missing %+v", c.missing)
	}
}

func TestReadStat(t *testing.T) {
	st, err := procfs.ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Live() || st.Pgrp != syscall.Getpgrp() || st.StartTime == 0 || st.StartTime > procfs.BootTicks() {
		t.Fatalf("own stat %+v (pgrp %d, now %d ticks)", st, syscall.Getpgrp(), procfs.BootTicks())
	}
	id, ok := readIdent(os.Getpid(), st.StartTime)
	if !ok || id.instance != os.Getenv("ALLEX_INSTANCE") {
		t.Fatalf("own identity %+v", id)
	}
}
