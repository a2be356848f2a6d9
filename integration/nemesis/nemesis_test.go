//go:build linux

package nemesis

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/netns"
)

// Flags. The short run (the suite's) is the defaults: one operation of
// each kind, about two minutes. The long run:
//
//	go test ./integration/nemesis -run Nemesis -v -timeout 30m \
//	    -nemesis.duration 10m -nemesis.report
//
// Against other binaries (e.g. a checkout of an older tree):
//
//	-nemesis.bin /tmp/allex-before/bin -nemesis.lmflags "-heartbeat 1s -grace 5s" \
//	    -nemesis.lan pretls -nemesis.assert=false -nemesis.report
var (
	flagBin      = flag.String("nemesis.bin", "", "directory holding the allexmaster and allexlanmanager to test (default: build this tree's)")
	flagSeed     = flag.Uint64("nemesis.seed", 0, "seed of the operations' order and targets (0: from the clock; the seed used is logged)")
	flagDuration = flag.Duration("nemesis.duration", 100*time.Second, "start operations until this much time has passed (one of each kind always runs)")
	flagLMFlags  = flag.String("nemesis.lmflags", defaultLMFlags, "extra allexlanmanager flags, split on spaces (timing flags differ between versions)")
	flagReport   = flag.Bool("nemesis.report", false, "log the per-operation report even when the test passes (use with -v)")
	flagAssert   = flag.Bool("nemesis.assert", true, "fail on an overlap, a lost need, a second master that does not refuse or harms the live one, or a slow recovery; false only measures")
	flagNeeds    = flag.Int("nemesis.needs", 30, "needs added at the start")
	flagBounds   = flag.String("nemesis.bounds", defaultBounds, "most time back to exactly one published copy per need, per operation kind")
	flagLAN      = flag.String("nemesis.lan", lanTLS, "how the LAN speaks: tls (masters join with a token made by allexlanmanager token create), insecure (allexlanmanager -insecure, masters \"laninsecure\" with the shared token) or pretls (binaries from before TLS: plain HTTP, the shared token)")
	flagSettle   = flag.Duration("nemesis.settle", 45*time.Second, "most time to wait, after a fault ends, for every need to be back to one copy before the next operation")
)

// defaultLMFlags is valid for the old LAN manager and the new one: their
// other timing flags differ (old: -grace; new: -lease, -fence-grace,
// -exit-fence, -margin), so they are given with -nemesis.lmflags. The
// "before" numbers were taken with "-heartbeat 1s -grace 5s".
const defaultLMFlags = "-heartbeat 1s"

// defaultBounds are the fencing design's targets for the time from a
// fault's start until every need is back to one published copy: a master
// gone (kill) 5s, a silent one (stop, cut) 15s, a LAN manager restart 15s.
// Clones and second masters should not disturb anything; if they do,
// 15s.
const defaultBounds = "kill=5s,stop=15s,cut=15s,lmkill=15s,clone=15s,second=15s,secondsock=15s"

// perMovedCopy is added to a kill's bound for each copy the killed master
// ran: they restart elsewhere once it is fenced (3s), and one master
// starting 18 at once took 2.2-2.4s on this 2-core VM.
const perMovedCopy = 150 * time.Millisecond

// boundText is kind's bound as the report shows it.
func (p params) boundText(kind string) string {
	if kind == "kill" {
		return fmt.Sprintf("%s + %s per copy", p.bounds[kind], perMovedCopy)
	}
	return p.bounds[kind].String()
}

// bound is op's bound: its kind's, and for a kill the time its copies
// take to start again elsewhere.
func (p params) bound(op *opRecord) time.Duration {
	b := p.bounds[op.Kind]
	if op.Kind == "kill" {
		b += time.Duration(op.Held) * perMovedCopy
	}
	return b
}

// How each fault is played.
const (
	restartAfter = 15 * time.Second // a master killed with -9 is started again after this
	stopFor      = 20 * time.Second // SIGSTOP to SIGCONT
	cutFor       = 30 * time.Second // link cut to healed
	lmDownFor    = 3 * time.Second  // LAN manager killed to started again
	cloneFor     = 15 * time.Second // clone with the same machine id runs this long
	secondWait   = 10 * time.Second // a second master on a live state dir must have refused by then
	sampleEvery  = 50 * time.Millisecond
	stableFor    = time.Second     // "back to one copy" must hold this long
	settleQuiet  = 3 * time.Second // and the LAN be ok this long before the next operation
	maxOps       = 1000            // bounds the operations loop whatever the duration
	deadlineRoom = 4 * time.Minute // left for the last operation and cleanup under go test -timeout
)

type params struct {
	seed     uint64
	duration time.Duration
	lmFlags  []string
	needs    int
	bounds   map[string]time.Duration
	settle   time.Duration
	lan      string // lanTLS, lanInsecure or lanPreTLS
}

// The ways the LAN can speak (-nemesis.lan).
const (
	lanTLS      = "tls"
	lanInsecure = "insecure"
	lanPreTLS   = "pretls"
)

func parseParams(t *testing.T) params {
	t.Helper()
	p := params{seed: *flagSeed, duration: *flagDuration, lmFlags: strings.Fields(*flagLMFlags),
		needs: *flagNeeds, settle: *flagSettle, lan: *flagLAN, bounds: map[string]time.Duration{}}
	if p.seed == 0 {
		p.seed = uint64(time.Now().UnixNano())
	}
	if p.lan != lanTLS && p.lan != lanInsecure && p.lan != lanPreTLS {
		t.Fatalf("-nemesis.lan %q: want %s, %s or %s", p.lan, lanTLS, lanInsecure, lanPreTLS)
	}
	if p.needs < 1 || p.needs > 500 {
		t.Fatalf("-nemesis.needs %d: want 1 to 500", p.needs)
	}
	for _, kv := range strings.Split(*flagBounds, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		d, err := time.ParseDuration(v)
		if !ok || err != nil || opKinds[k].name == "" {
			t.Fatalf("-nemesis.bounds: bad entry %q (want kind=duration, kinds %s)", kv, strings.Join(kindOrder, ", "))
		}
		p.bounds[k] = d
	}
	for _, k := range kindOrder {
		if _, ok := p.bounds[k]; !ok {
			t.Fatalf("-nemesis.bounds lacks %s", k)
		}
	}
	return p
}

// TestNemesis runs a LAN manager on host lm and masters on m1, m2, m3 (a
// spare host, clone, is for clones), adds the needs, then plays faults in
// random order while the checker samples; see checker_test.go for what
// is counted and report_test.go for the report.
//
// The LAN speaks TLS by default (-nemesis.lan): the harness trusts the CA
// the LAN manager makes in its data dir, and the masters join with a
// master token made by allexlanmanager token create.
func TestNemesis(t *testing.T) {
	p := parseParams(t)
	lan := netns.NewLAN(t, "lm", "m1", "m2", "m3", "clone")
	bin := binDir(t)
	t.Logf("nemesis: seed %d (rerun: -nemesis.seed %d), duration %s, binaries %s, LAN manager flags %q, LAN %s",
		p.seed, p.seed, p.duration, bin, strings.Join(p.lmFlags, " "), p.lan)
	c := newCluster(t, lan, bin, p)
	orig, back, err := raisePriority()
	if err != nil {
		t.Logf("nemesis: the checker runs at the test's niceness: %v", err)
	}
	c.nice = back
	t.Cleanup(func() { _ = setNice(orig) })
	c.setup()
	c.play(rand.New(rand.NewPCG(p.seed, 0x6e656d65736973)))
	c.chk.stop()
	res := c.chk.results()
	failures := c.verdict(res)
	if *flagReport || len(failures) > 0 || t.Failed() {
		t.Log("\n" + c.report(res))
	}
	if len(failures) > 0 && !*flagAssert {
		t.Logf("nemesis: %d assertion(s) would fail (-nemesis.assert=false):\n%s", len(failures), strings.Join(failures, "\n"))
	}
	if *flagAssert {
		for _, f := range failures {
			t.Error(f)
		}
	}
	if t.Failed() {
		c.logTails()
	}
}

// play runs operations until the duration has passed (every kind at least
// once), drawing kinds from shuffled decks so that short runs cover them
// all.
func (c *cluster) play(rng *rand.Rand) {
	started := time.Now()
	var deck []string
	for i := 0; i < maxOps; i++ {
		if i >= len(kindOrder) && time.Since(started) >= c.p.duration {
			return
		}
		if d, ok := c.t.Deadline(); ok && time.Until(d) < deadlineRoom {
			c.t.Logf("nemesis: stopping after %d operations: the test deadline is %s away", i, time.Until(d).Round(time.Second))
			return
		}
		if len(deck) == 0 {
			deck = append([]string(nil), kindOrder...)
			rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		}
		kind := deck[0]
		deck = deck[1:]
		c.revive()
		op := c.run(kind, rng)
		c.settle(op)
		c.t.Logf("nemesis: %s", op.summary())
	}
}

func (c *cluster) verdict(res checkResults) []string {
	var out []string
	byOp := c.overlapsByOp(res.Overlaps)
	for _, op := range append([]*opRecord{nil}, c.ops...) {
		ovs := byOp[op]
		if len(ovs) == 0 {
			continue
		}
		name, longest := "setup", ovs[0]
		if op != nil {
			name = op.title()
		}
		for _, o := range ovs {
			if o.duration() > longest.duration() {
				longest = o
			}
		}
		out = append(out, fmt.Sprintf("%s: %d overlaps (two or more live copies of an instance), the longest %s", name, len(ovs), longest.describe()))
	}
	for _, m := range res.Missing {
		out = append(out, fmt.Sprintf("acknowledged need %s missing from GET /v1/needs from %s for %s",
			m.Instance, c.sinceStart(m.Start), m.End.Sub(m.Start).Round(time.Millisecond)))
	}
	for _, op := range c.ops {
		bound := c.p.bound(op)
		switch {
		case !op.RecoveredOK:
			out = append(out, fmt.Sprintf("%s: not back to one published copy per need within %s of the fault's end: %s", op.title(), c.p.settle, op.Why))
		case op.Recovered > bound:
			out = append(out, fmt.Sprintf("%s: back to one published copy per need after %s, bound %s", op.title(), op.Recovered.Round(time.Millisecond), bound))
		}
		if isSecond(op.Kind) && (op.SecondRunning || op.SecondErr == "exit 0" || op.ChildrenDied > 0) {
			out = append(out, fmt.Sprintf("%s: %s", op.title(), op.secondOutcome()))
		}
	}
	out = append(out, c.unexpected...)
	return out
}
