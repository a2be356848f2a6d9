//go:build linux

package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func msDur(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

// fakeResult is a system's result with one round: a start time (ms) for
// each N and the kill times (ms).
func fakeResult(name string, starts map[int]float64, kills ...float64) *result {
	r := &result{name: name, start: map[int][]timing{}}
	for n, v := range starts {
		r.start[n] = []timing{{ready: msDur(v), accept: msDur(v)}}
	}
	for i, k := range kills {
		r.kills = append(r.kills, msDur(k))
		r.killAt = append(r.killAt, killPlace{round: 1, nth: i + 1})
	}
	return r
}

// withRSS gives r an idle measurement: its supervisor's processes' RSS in
// MB, idle with n children.
func withRSS(r *result, n int, mb ...float64) *result {
	r.idleN = n
	for _, v := range mb {
		r.idle = append(r.idle, namedUsage{role: r.name, machine: true, usage: usage{PSSKB: int(v * 1024)}})
	}
	return r
}

// fullRun is a run that meets every gate (the shape of a full run: N=1,
// 100 and 500, allex's RSS with its master and keeper).
func fullRun() (*options, []*result) {
	o := &options{ns: []int{1, 100, 500}, kills: 3, rounds: 1}
	return o, []*result{
		withRSS(fakeResult("allex", map[int]float64{1: 4, 100: 70, 500: 348}, 1.4, 1.5, 4), 500, 20, 4),
		withRSS(fakeResult("pm2", map[int]float64{1: 332, 100: 1048, 500: 3813}, 9.4, 9.5, 14.9), 500, 111),
		withRSS(fakeResult("supervisord", map[int]float64{1: 214, 100: 594, 500: 2772}, 1019, 1020, 1031), 500, 39),
		withRSS(fakeResult("floor", map[int]float64{1: 1, 100: 31, 500: 156}, 0.9, 1.0, 1.4), 500, 1.6),
	}
}

// verdicts maps each gate's name to its verdict, and to why when not run.
func verdicts(gs []gate) map[string]string {
	m := map[string]string{}
	for _, g := range gs {
		m[g.name] = g.verdict.String()
		if g.verdict == notRun {
			m[g.name] += ": " + g.why
		}
	}
	return m
}

const (
	gStart500Sup = "(a) start N=500, all published: allex/supervisord"
	gStart1PM2   = "(a) start N=1, all published: allex/pm2"
	gKillPM2     = "(b) kill -9 → accepting again, p50: allex/pm2"
	gKillSup     = "(b) kill -9 → accepting again, p50: allex/supervisord"
	gRSS         = "(c) supervisor memory (PSS) idle with 500 children (allex: master and keeper)"
)

func TestGatesAllMet(t *testing.T) {
	o, results := fullRun()
	gs := gates(o, results)
	// Three starts and the kill p50 against each of two peers, and the RSS.
	if len(gs) != 9 {
		t.Fatalf("%d gates, want 9: %v", len(gs), verdicts(gs))
	}
	for _, g := range gs {
		if g.verdict != met {
			t.Errorf("%s: %s (%s), want met", g.name, g.verdict, g.why)
		}
	}
	if err := outcome(results, gs); err != nil {
		t.Errorf("outcome: %v, want nil", err)
	}
}

// TestGatesLimit: a ratio of exactly the limit is met, one above it is
// missed, and the miss is the run's error, with the ratio and the limit.
func TestGatesLimit(t *testing.T) {
	for _, tc := range []struct {
		supStart500 float64 // allex's is 348
		want        string
	}{
		{1740, "met"},    // 348/1740 = 0.20
		{1731, "MISSED"}, // 0.201
	} {
		o, results := fullRun()
		results[2].start[500] = []timing{{ready: msDur(tc.supStart500)}}
		gs := gates(o, results)
		if got := verdicts(gs)[gStart500Sup]; got != tc.want {
			t.Errorf("supervisord N=500 in %v ms: %s, want %s", tc.supStart500, got, tc.want)
		}
		err := outcome(results, gs)
		if tc.want == "met" && err != nil {
			t.Errorf("at the limit: %v", err)
		}
		if tc.want == "MISSED" && (err == nil || err.Error() != "gates missed: "+gStart500Sup+" 0.201 > 0.20") {
			t.Errorf("above the limit: %v", err)
		}
	}
}

// TestGatesNotRun: a peer left out (-only), not available or failed, or
// a metric not measured, makes its gates "not run", never a miss.
func TestGatesNotRun(t *testing.T) {
	o, results := fullRun()
	onlyAllex := results[:1]
	for name, v := range verdicts(gates(o, onlyAllex)) {
		if name != gRSS && !strings.HasPrefix(v, "not run: ") {
			t.Errorf("-only allex: %s %s, want not run", name, v)
		}
	}
	if got, want := verdicts(gates(o, onlyAllex))[gStart1PM2], "not run: pm2 not in this run"; got != want {
		t.Errorf("-only allex: %q, want %q", got, want)
	}
	if err := outcome(onlyAllex, gates(o, onlyAllex)); err != nil {
		t.Errorf("-only allex: %v, want nil", err)
	}

	o, results = fullRun()
	results[1].unavailable = "npm: not found"
	results[2].failed = errors.New("round 1: boom")
	results[2].start[500] = []timing{{ready: time.Second}} // would miss
	gs := gates(o, results)
	v := verdicts(gs)
	for name, want := range map[string]string{
		gStart1PM2:   "not run: pm2 not available",
		gStart500Sup: "not run: supervisord failed",
		gRSS:         "met",
	} {
		if v[name] != want {
			t.Errorf("%s: %q, want %q", name, v[name], want)
		}
	}
	// The failure is the run's error; the gate it would have missed is not.
	if err := outcome(results, gs); err == nil || err.Error() != "supervisord: round 1: boom" {
		t.Errorf("outcome: %v, want only supervisord's failure", err)
	}

	o, results = fullRun()
	o.kills = 0
	for _, r := range results {
		r.kills, r.killAt = nil, nil
	}
	if got := verdicts(gates(o, results))[gKillSup]; got != "not run: not measured" {
		t.Errorf("no kills: %q", got)
	}
}

// TestGatesRSS: the RSS sums the supervisor's processes (allex: master
// and keeper); over the limit is a miss, and it is only judged idle with
// the target's 500 children.
func TestGatesRSS(t *testing.T) {
	o, results := fullRun()
	withRSS(results[0], 500, 5) // now 20 + 4 + 5 MB
	if got := verdicts(gates(o, results))[gRSS]; got != "met" {
		t.Errorf("29 MB: %s", got)
	}
	withRSS(results[0], 500, 2) // 31 MB
	gs := gates(o, results)
	if got := verdicts(gs)[gRSS]; got != "MISSED" {
		t.Errorf("31 MB: %s", got)
	}
	if err := outcome(results, gs); err == nil || !strings.Contains(err.Error(), gRSS+" 31.0 MB > 30 MB") {
		t.Errorf("31 MB: %v", err)
	}
	results[0].idleN = 20
	if got := verdicts(gates(o, results))[gRSS]; got != "not run: idle measured with 20 children" {
		t.Errorf("20 children: %s", got)
	}
}

// TestGatesReported: allex/floor far above its goals and a p99 ratio far
// above the limit are reported but gate nothing.
func TestGatesReported(t *testing.T) {
	o, results := fullRun()
	o.rounds = 3
	results[0].kills[2] = msDur(9.5)                      // allex p99 / PM2's > 0.20
	results[3].start[500] = []timing{{ready: msDur(100)}} // allex/floor 3.48
	results[0].killSteal = []uint64{7, 0, 1}
	results[1].killSteal = []uint64{0}
	gs := gates(o, results)
	if err := outcome(results, gs); err != nil {
		t.Errorf("outcome: %v, want nil", err)
	}
	md := report(o, results, []string{"machine line"})
	wantAll(t, md, []string{
		"## Gates\n",
		"| " + gStart500Sup + " | 0.126 | ≤ 0.20 | met |\n",
		"| " + gKillPM2 + " | 0.158 | ≤ 0.20 | met |\n",
		"| " + gRSS + " | 24.0 MB | ≤ 30 MB | met |\n",
		"- allex/floor, start N=500, all published: 3.48 (goal 1.5)\n",
		"- allex/floor, kill -9 → accepting again, p50: 1.50 (goal 1.2)\n",
		"p99 of 3, with the CPU time the hypervisor took (steal) during that system's kill rounds: " +
			"allex 9.5 ms (steal 80 ms: 70, 0, 10 by round), pm2 14.9 ms (steal 0 ms), supervisord 1031.0 ms (steal not read), floor 1.4 ms (steal not read)\n",
		"\nMachine:\n",
	})
	if strings.Contains(md, "issue 5") {
		t.Errorf("report still names issue 5:\n%s", md)
	}

	// Without the floor its goals are not run, and say so.
	md = report(o, results[:3], nil)
	wantAll(t, md, []string{"- allex/floor, kill -9 → accepting again, p50: – (goal 1.2; not run)\n"})
}
