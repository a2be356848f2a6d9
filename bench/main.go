//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/allex-go/allex/internal/procfs"
)

func main() {
	// Piping the output into head must not kill the bench before it has
	// stopped the supervisors it started.
	signal.Ignore(syscall.SIGPIPE)
	// The kill prober makes blocking system calls on a thread of its own
	// and needs a P back after each. With as many Ps as cores, the bench's
	// other goroutines (allex's watch stream reader, the GC's workers)
	// sometimes held both, and the probe waited, which showed in the kill
	// tail. More Ps than cores leave the choice to the kernel's scheduler.
	// Set here, not through the environment, which the supervisors
	// inherit.
	runtime.GOMAXPROCS(4 * runtime.NumCPU())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runBench(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		os.Exit(1)
	}
}

// options are the parsed flags plus paths every system shares.
type options struct {
	ns      []int
	kills   int
	rounds  int
	idle    time.Duration
	out     string
	only    string
	repo    string // module root
	cache   string // peers installed here, kept between runs
	work    string // where the systems keep their files, removed at the end
	fs      string // -fs: "fresh" or "tmp" (fs.go)
	fsInfo  string // what the report says about the files' filesystem
	child   string // -child: "c", "libc" or "go"
	tinysrv string // built child binary
	// childInfo says which child ran and how it was built (machine info).
	childInfo string
	notes     []string // for the report, e.g. a fallback to the Go child
	prober    *prober  // times (b), the same for every system
	log       io.Writer
}

func (o *options) maxN() int { return slices.Max(o.ns) }

// system is one supervisor under test.
type system interface {
	name() string
	// prepare installs or builds the system and returns its version; an
	// error means "not available" and the other systems still run.
	prepare(ctx context.Context, o *options) (string, error)
	// launch starts the supervisor, then n services, and returns once
	// the supervisor is up with how long the services took (see README).
	launch(ctx context.Context, o *options, n int) (instance, timing, error)
}

// timing of one launch: ready is the headline number (every port
// accepts; for allex every service published); accept is for allex the
// time until every port accepted TCP.
type timing struct {
	ready, accept time.Duration
}

// instance is a running supervisor with its n services.
type instance interface {
	// pids of the supervisor's own processes, by role, main one first.
	pids() []namedPID
	// kill kill -9's service i and times until its replacement accepts.
	kill(ctx context.Context, pr *prober, i int) (time.Duration, error)
	// ports the services listen on, to check nothing is left behind.
	ports() []int
	stop() error
}

type namedPID struct {
	role string
	pid  int
	// machine: the process is part of the machine's supervisor, counted
	// in the supervisor's RSS and CPU (allex's LAN manager is not).
	machine bool
}

// result is everything measured for one system.
type result struct {
	name, version string
	unavailable   string
	failed        error
	start         map[int][]timing // one per round
	kills         []time.Duration
	killAt        []killPlace     // where each of kills was made, and what the system said of it
	killSteal     []uint64        // per round with kills: CPU steal meanwhile, clock ticks
	republished   []time.Duration // allex: kill → the LAN manager published the replacement
	idleN         int
	idle          []namedUsage
	notes         []string
}

type namedUsage struct {
	role    string
	machine bool
	usage
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{log: stderr}
	ns := fs.String("n", "1,100,500", "service counts to start, comma separated; idle and kills use the largest")
	fs.IntVar(&o.kills, "kills", 100, "kill -9 rounds, spread over the rounds")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds: each starts every N on every system, the systems in a rotating order; a start's result is the median over the rounds")
	fs.DurationVar(&o.idle, "idle", 10*time.Second, "idle window for RSS and CPU")
	fs.StringVar(&o.out, "out", "bench/results.md", "Markdown results file (relative to the module root)")
	fs.StringVar(&o.only, "only", "", "run one system: allex, pm2, supervisord or floor (the reference, bench/floor-c)")
	fs.StringVar(&o.child, "child", "c", "tiny child to supervise: c (bench/tinysrv-c built with cc, without the C library on linux/amd64 and arm64), libc (the same with the C library) or go (bench/tinysrv)")
	fs.StringVar(&o.fs, "fs", fsFresh, "where the systems' files go: fresh (a new ext4 filesystem on a loop device, needs root; else falls back to tmp) or tmp (a temp dir)")
	quick := fs.Bool("quick", false, "smoke run: -n 1,20 -kills 10 -idle 2s -rounds 1 (flags given explicitly win)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *quick {
		// Flags given explicitly win over -quick's.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["n"] {
			*ns = "1,20"
		}
		if !set["kills"] {
			o.kills = 10
		}
		if !set["idle"] {
			o.idle = 2 * time.Second
		}
		if !set["rounds"] {
			o.rounds = 1
		}
	}
	for _, s := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 2000 {
			return nil, fmt.Errorf("-n: %q is not a count from 1 to 2000", s)
		}
		o.ns = append(o.ns, n)
	}
	if o.kills < 0 || o.kills > 10000 {
		return nil, fmt.Errorf("-kills %d: want 0 to 10000", o.kills)
	}
	if o.rounds < 1 || o.rounds > 20 {
		return nil, fmt.Errorf("-rounds %d: want 1 to 20", o.rounds)
	}
	if o.idle <= 0 || o.idle > 10*time.Minute {
		return nil, fmt.Errorf("-idle %v: want more than 0 and at most 10m", o.idle)
	}
	switch o.only {
	case "", "allex", "pm2", "supervisord", "floor":
	default:
		return nil, fmt.Errorf("-only %q: want allex, pm2, supervisord or floor", o.only)
	}
	if o.fs != fsFresh && o.fs != fsTmp {
		return nil, fmt.Errorf("-fs %q: want fresh or tmp", o.fs)
	}
	if o.child != "c" && o.child != "libc" && o.child != "go" {
		return nil, fmt.Errorf("-child %q: want c, libc or go", o.child)
	}
	return o, nil
}

func runBench(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	if o.repo, err = moduleRoot(); err != nil {
		return err
	}
	o.cache = filepath.Join(o.repo, ".tools", "bench")
	if !filepath.IsAbs(o.out) {
		o.out = filepath.Join(o.repo, o.out)
	}
	wd, err := makeWorkDir(ctx, o.fs)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := wd.cleanup(); cerr != nil {
			fmt.Fprintln(o.log, "bench: removing the work dir:", cerr)
		}
	}()
	o.work, o.fsInfo = wd.path, wd.info
	fmt.Fprintln(o.log, "bench: "+o.fsInfo)
	if err := buildChild(ctx, o); err != nil {
		return err
	}
	o.prober = newProber()
	defer o.prober.close()
	if o.prober.note != "" {
		o.notes = append(o.notes, o.prober.note)
	}

	loadBefore := loadAvg()
	var systems []system
	for _, sys := range []system{&allexSystem{}, &pm2System{}, &supervisordSystem{}, &floorSystem{}} {
		if o.only == "" || o.only == sys.name() {
			systems = append(systems, sys)
		}
	}
	results := make([]*result, len(systems))
	for i, sys := range systems {
		results[i] = prepare(ctx, o, sys)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	// Rounds, each system in turn, in an order that rotates: the machine's
	// speed drifts over minutes (a host's other guests), and running the
	// systems one after the other made that drift part of the ratios.
	for round := range o.rounds {
		for j := range systems {
			i := (j + round) % len(systems)
			if results[i].unavailable == "" && results[i].failed == nil {
				measure(ctx, o, systems[i], results[i], round)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	info := append(machineInfo(ctx, o, results), "load average (1/5/15 min) before: "+loadBefore+", after: "+loadAvg())
	md := report(o, results, info)
	fmt.Fprint(stdout, md)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	fmt.Fprintln(stdout, "\nwritten to", o.out)
	return outcome(results, gates(o, results))
}

// outcome is how a run ends: an error for each system that failed and
// one listing the gated targets missed, or nil.
func outcome(results []*result, gs []gate) error {
	var errs []error
	for _, r := range results {
		if r.failed != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, r.failed))
		}
	}
	return errors.Join(append(errs, gatesMissed(gs))...)
}

// prepare installs or builds a system; if it cannot, the result says why
// and the other systems still run.
func prepare(ctx context.Context, o *options, sys system) *result {
	r := &result{name: sys.name(), start: map[int][]timing{}}
	v, err := sys.prepare(ctx, o)
	if err != nil {
		r.unavailable = err.Error()
		logf(o, sys, "not available: %v", err)
		return r
	}
	r.version = v
	logf(o, sys, "version %s", v)
	return r
}

func logf(o *options, sys system, format string, a ...any) {
	fmt.Fprintf(o.log, "[%s] %s %s\n", time.Now().Format("15:04:05"), sys.name(), fmt.Sprintf(format, a...))
}

// measure runs one round of one system; a failure is recorded in the
// result, which then takes no further rounds, so the other systems still
// run.
func measure(ctx context.Context, o *options, sys system, r *result, round int) {
	for _, n := range o.ns {
		if err := launchOnce(ctx, o, sys, n, r, round); err != nil {
			r.failed = fmt.Errorf("round %d, with %d services: %w", round+1, n, err)
			logf(o, sys, "failed: %v", r.failed)
			return
		}
	}
}

// killsIn is how many of the kills round runs: all of them spread evenly,
// the first rounds taking the remainder.
func (o *options) killsIn(round int) int {
	k := o.kills / o.rounds
	if round < o.kills%o.rounds {
		k++
	}
	return k
}

func launchOnce(ctx context.Context, o *options, sys system, n int, r *result, round int) (err error) {
	logf := func(format string, a ...any) { logf(o, sys, format, a...) }
	logf("round %d: starting %d services", round+1, n)
	in, t, err := sys.launch(ctx, o, n)
	if err != nil {
		return err
	}
	defer func() {
		ports := in.ports()
		err = errors.Join(err, in.stop())
		addrs := make([]string, len(ports))
		for i, p := range ports {
			addrs[i] = addr(p)
		}
		err = errors.Join(err, waitNoneAccept(addrs, 30*time.Second))
	}()
	r.start[n] = append(r.start[n], t)
	logf("N=%d ready in %v (all accepting TCP: %v)", n, t.ready.Round(time.Millisecond), t.accept.Round(time.Millisecond))
	// The instance's own notes (allex's breakdowns) are kept from the last
	// round only, with the kills that round made.
	defer func() {
		if rk, ok := in.(interface{ republishedKills() []time.Duration }); ok {
			r.republished = append(r.republished, rk.republishedKills()...)
		}
		if nt, ok := in.(interface{ notes() []string }); ok && round == o.rounds-1 {
			r.notes = append(r.notes, nt.notes()...)
		}
	}()
	if n != o.maxN() {
		return nil
	}
	// Let start-up work (logs, timers, GC) settle before calling it idle,
	// and let every child pass a second of uptime before it is killed: a
	// child that dies sooner is crashing as it starts, which allex (like
	// PM2's and supervisord's defaults, which the bench turns off for
	// them) restarts after a backoff rather than at once.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Second):
	}
	if round == 0 {
		if err := measureIdleOf(ctx, o, in, n, r, logf); err != nil {
			return err
		}
	}
	steal0, stealErr := procfs.StealTicks()
	for k := range o.killsIn(round) {
		// Round-robin over the services, across rounds too.
		d, err := in.kill(ctx, o.prober, len(r.kills)%n)
		if err != nil {
			return fmt.Errorf("kill %d: %w", len(r.kills)+1, err)
		}
		r.kills = append(r.kills, d)
		place := killPlace{round: round + 1, nth: k + 1}
		if kn, ok := in.(killNoter); ok {
			place.note = kn.lastKillNote()
		}
		r.killAt = append(r.killAt, place)
		// Let the supervisor finish its bookkeeping (outside the timing).
		time.Sleep(50 * time.Millisecond)
	}
	if steal1, err := procfs.StealTicks(); err == nil && stealErr == nil && o.killsIn(round) > 0 {
		r.killSteal = append(r.killSteal, steal1-steal0)
	}
	if len(r.kills) > 0 {
		logf("%d kills so far: p50 %v p99 %v", len(r.kills), percentile(r.kills, 50).Round(10*time.Microsecond), percentile(r.kills, 99).Round(10*time.Microsecond))
	}
	return nil
}

// killNoter is an instance that can say more of its last kill than its
// time: which part of it was the supervisor's, so that the slowest kills
// in the report show where they went.
type killNoter interface{ lastKillNote() string }

// killPlace says which round a kill was made in, its place there, and
// what the system said of it (allex: when the replacement was spawned).
type killPlace struct {
	round, nth int
	note       string
}

// slowestKills lists the k slowest kills with where they were made: a p99
// of 100 is the second slowest, so one slow kill more or less moves it.
func (r *result) slowestKills(k int) string {
	idx := make([]int, len(r.kills))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return r.kills[idx[a]] > r.kills[idx[b]] })
	var parts []string
	for _, i := range idx[:min(k, len(idx))] {
		at := r.killAt[i]
		where := fmt.Sprintf("round %d, kill %d", at.round, at.nth)
		if at.note != "" {
			where += "; " + at.note
		}
		parts = append(parts, fmt.Sprintf("%.1f ms (%s)", ms(r.kills[i]), where))
	}
	return strings.Join(parts, ", ")
}

// measureIdleOf records the supervisor's RSS and CPU while idle with n
// children.
func measureIdleOf(ctx context.Context, o *options, in instance, n int, r *result, logf func(string, ...any)) error {
	pids := in.pids()
	raw := make([]int, len(pids))
	for i, p := range pids {
		raw[i] = p.pid
	}
	us, err := measureIdle(ctx, o.idle, raw...)
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	r.idleN = n
	for i, u := range us {
		r.idle = append(r.idle, namedUsage{role: pids[i].role, machine: pids[i].machine, usage: u})
		logf("idle with %d children: %s PSS %.1f MB, RSS %.1f MB, CPU %.2f%%", n, pids[i].role, float64(u.PSSKB)/1024, float64(u.RSSKB)/1024, u.CPUPercent)
	}
	return nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/allex-go/allex\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run inside the allex module (no go.mod of github.com/allex-go/allex above the working directory)")
		}
		dir = parent
	}
}

// goBuild builds pkg (relative to the module root) to out, without -race:
// the bench measures what users run.
func goBuild(ctx context.Context, o *options, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = o.repo
	// Built as the README builds for deployment: static, without libc.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// loadAvg is /proc/loadavg's first three fields: other work on the
// machine skews every number, so the report says how busy it was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
