//go:build linux

package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets this test binary be the bench's worker and pinned
// processes too, as the bench binary is.
func TestMain(m *testing.M) {
	if code, ok := dispatch(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestEndToEnd runs the whole bench small: the real allexlanmanager,
// masters in a worker process with real links and listeners, batches and
// single needs through the admin API, the watch stream, and the kill of
// a master whose services must come back on the others.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs allexlanmanager")
	}
	o, err := parseOptions([]string{"-masters", "5", "-needs", "200", "-batch", "50", "-single-rate", "100", "-timeout", "2m", "-drop", "-nice", "1"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := runBench(ctx, o)
	if r != nil {
		var b strings.Builder
		r.print(&b)
		t.Log("\n" + b.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if !r.complete || r.placed != 200 || len(r.burstLat) != 200 {
		t.Errorf("placed %d, %d latencies, complete %v: want all 200", r.placed, len(r.burstLat), r.complete)
	}
	if r.singlesAdded == 0 || len(r.singleLat) != r.singlesAdded || r.singlesFailed != 0 {
		t.Errorf("single needs: %d added, %d published, %d failed: want some, all published", r.singlesAdded, len(r.singleLat), r.singlesFailed)
	}
	c := r.counts()
	if c["grants"] < int64(r.placedTotal) || c["errors"] != 0 || c["listenerrors"] != 0 || c["queuefull"] != 0 || len(r.lost) != 0 {
		t.Errorf("counts %v, lost links %q: want a grant per placement, no errors, no lost link", c, r.lost)
	}
	if f := r.failover; f == nil || !f.done || f.services == 0 || f.moved != f.services {
		t.Errorf("failover %+v: want every service of the killed master published elsewhere", f)
	}
	if r.lmCPU <= 0 || r.lmMem.peakKB <= 0 || r.lmPeakFDs <= 0 {
		t.Errorf("LAN manager CPU %v, peak RSS %d kB, peak fds %d: want each measured", r.lmCPU, r.lmMem.peakKB, r.lmPeakFDs)
	}
	if md := r.markdown(); !strings.Contains(md, "| placements/s |") || !strings.Contains(md, "| LAN link | TLS (wss)") {
		t.Errorf("markdown has no placements row, or does not say the link was TLS:\n%s", md)
	}
}

// TestEndToEndInsecure runs the bench smaller against a LAN manager run
// with -insecure: plain WebSockets, masters link with its token.
func TestEndToEndInsecure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs allexlanmanager")
	}
	o, err := parseOptions([]string{"-insecure", "-masters", "2", "-needs", "20", "-batch", "10", "-single-rate", "0", "-timeout", "1m"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := runBench(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !r.complete || r.placed != 20 || len(r.lost) != 0 {
		t.Errorf("placed %d, complete %v, lost %q: want all 20, no lost link", r.placed, r.complete, r.lost)
	}
	if md := r.markdown(); !strings.Contains(md, "| LAN link | plain WebSockets") {
		t.Errorf("markdown does not say the link was plain:\n%s", md)
	}
}

// TestOptionsRefused checks each bad flag is refused with what it names.
func TestOptionsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-config", "huge"}, `-config "huge": want small or large`},
		{[]string{"-masters", "-1"}, "-masters -1: want 1 to 60000"},
		{[]string{"-masters", "70000"}, "-masters 70000: want 1 to 60000"},
		{[]string{"-needs", "-5"}, "-needs -5: want at least 1"},
		{[]string{"-batch", "0"}, "-batch 0: want 1 to 10000"},
		{[]string{"-batch", "10001"}, "-batch 10001: want 1 to 10000"},
		{[]string{"-single-rate", "-1"}, "-single-rate -1: want 0 to 1000"},
		{[]string{"-burst-rate", "-5"}, "-burst-rate -5: want 0 (no limit) or more"},
		{[]string{"-timeout", "0s"}, "-timeout 0s: want more than 0"},
		{[]string{"-max-processes", "-2"}, "-max-processes -2: want 0"},
		{[]string{"-nice", "-21"}, "-nice -21: want -20 to 19"},
		{[]string{"-nice", "20"}, "-nice 20: want -20 to 19"},
		{[]string{"-masters", "2", "-needs", "100", "-single-rate", "0", "-max-processes", "10"}, "2 masters hold at most 20 services, fewer than the 100 needs"},
		{[]string{"stray"}, `unexpected arguments ["stray"]`},
		{[]string{"-nope"}, "flag provided but not defined: -nope"},
	} {
		var stderr strings.Builder
		_, err := parseOptions(tc.args, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// TestOptionsConfigs checks the named sizes and that explicit flags win.
func TestOptionsConfigs(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		masters, needs int
		wantMaxAtLeast int
	}{
		{nil, 100, 10_000, 200},
		{[]string{"-config", "large"}, 1_000, 100_000, 200},
		{[]string{"-config", "large", "-masters", "10"}, 10, 100_000, 20_000},
	} {
		o, err := parseOptions(tc.args, os.Stderr)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if o.masters != tc.masters || o.needs != tc.needs || o.maxProcs < tc.wantMaxAtLeast {
			t.Errorf("%q: %d masters, %d needs, maxprocesses %d; want %d, %d, at least %d", tc.args, o.masters, o.needs, o.maxProcs, tc.masters, tc.needs, tc.wantMaxAtLeast)
		}
	}
}

// TestWorkerInputRefused checks the worker's flags and commands.
func TestWorkerInputRefused(t *testing.T) {
	for _, args := range [][]string{
		{"-url", "ws://x", "-token", "t", "-count", "0"},
		{"-token", "t", "-count", "1"},
		{"-url", "ws://x", "-token", "t", "-count", "1", "-first", "-1"},
		{"-url", "http://x", "-token", "t", "-count", "1"},
		// Over TLS the masters join: the token must pin the CA.
		{"-url", "wss://x", "-token", "t", "-count", "1"},
		{"-url", "wss://x", "-token", "abcdef.0123456789abcdefghijklmnopqrstuv", "-count", "1"},
	} {
		if _, err := parseWorkerArgs(args); err == nil || !strings.Contains(err.Error(), "worker: want") {
			t.Errorf("%q: got %v, want a worker flags error", args, err)
		}
	}
	pinned := "K10" + strings.Repeat("ab", 32) + "::abcdef.0123456789abcdefghijklmnopqrstuv"
	if w, err := parseWorkerArgs([]string{"-url", "wss://x/v1/link", "-token", pinned, "-count", "1"}); err != nil || w.join == nil || w.join.ID != "abcdef" {
		t.Errorf("a wss -url with a join token: %+v, %v", w, err)
	}
	if got := lanBase("wss://127.0.0.1:9/v1/link"); got != "https://127.0.0.1:9" {
		t.Errorf("lanBase = %q", got)
	}
	for line, want := range map[string]string{
		"kill 3":   `unknown command "kill 3"`,
		"drop":     `unknown command "drop"`,
		"drop x":   `drop "x": not a master of this worker (10-14)`,
		"drop 15":  `drop "15": not a master of this worker (10-14)`,
		"drop 9":   `drop "9": not a master of this worker (10-14)`,
		"drop 1 2": `unknown command "drop 1 2"`,
	} {
		if _, err := parseDrop(line, 10, 5); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", line, err, want)
		}
	}
	if i, err := parseDrop("drop 14", 10, 5); err != nil || i != 14 {
		t.Errorf("drop 14: got %d, %v", i, err)
	}
}

// TestTakeAll checks the policy runs what fits its capacity, as
// agent/needs does.
func TestTakeAll(t *testing.T) {
	if why := (TakeAll{}).Decline(need("a"), View{MaxProcesses: 2, Running: 1}); why != "" {
		t.Errorf("room for one more: declined (%s)", why)
	}
	if why := (TakeAll{}).Decline(need("a"), View{MaxProcesses: 2, Running: 2}); why == "" {
		t.Error("full: not declined")
	}
	if why := (TakeAll{}).Decline(need("a"), View{Running: 1000}); why != "" {
		t.Errorf("unlimited: declined (%s)", why)
	}
}

// TestParseCPUs checks the pin's CPU list.
func TestParseCPUs(t *testing.T) {
	set, err := parseCPUs("0,3")
	if err != nil || !set.IsSet(0) || !set.IsSet(3) || set.Count() != 2 {
		t.Errorf("0,3: got %v, %v", set, err)
	}
	for _, bad := range []string{"", "a", "1,", "-1", "1-3", "5000"} {
		if _, err := parseCPUs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
