package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if code, ok := dispatch(); ok {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "scale:", err)
		}
		os.Exit(1)
	}
}

// options are the bench's flags.
type options struct {
	config     string
	masters    int
	needs      int
	batch      int
	singleRate float64
	burstRate  float64
	timeout    time.Duration
	maxProcs   int
	drop       bool
	out        string
	lanmanager string
	lmFlags    []string
	keep       bool
	nice       int
	// insecure runs the LAN manager with -insecure: plain HTTP and
	// WebSockets, masters link with its token. By default it speaks TLS
	// and each master joins with a join token, then links with its
	// certificate, as allexmaster does.
	insecure bool
}

// configs are the named sizes of the issue.
var configs = map[string][2]int{"small": {100, 10_000}, "large": {1_000, 100_000}}

// maxMasters keeps masterAddr inside 127/8.
const maxMasters = 60_000

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, "config", "small", "small (100 masters × 10,000 needs) or large (1,000 × 100,000); -masters and -needs override")
	fs.IntVar(&o.masters, "masters", 0, "simulated masters")
	fs.IntVar(&o.needs, "needs", 0, "needs added in batches")
	fs.IntVar(&o.batch, "batch", 1000, "needs per POST /v1/needs")
	fs.Float64Var(&o.singleRate, "single-rate", 20, "single needs added per second meanwhile (0: none)")
	fs.Float64Var(&o.burstRate, "burst-rate", 0, "add the batch needs no faster than this many per second (0: as fast as they are accepted)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "bound on connecting the masters, and on placing the needs")
	fs.IntVar(&o.maxProcs, "max-processes", 0, "each master's maxprocesses (0: twice its share of the needs, plus its share of the most single needs)")
	fs.BoolVar(&o.drop, "drop", false, "then kill the master with the most services and time their move")
	fs.StringVar(&o.out, "out", "", "also write the result as Markdown to this file")
	fs.StringVar(&o.lanmanager, "lanmanager", "", "allexlanmanager binary to run (default: build ./cmd/allexlanmanager)")
	fs.Func("lanmanager-flags", "more flags for the LAN manager, split at spaces (e.g. \"-max-placing 512\")", func(v string) error {
		o.lmFlags = append(o.lmFlags, strings.Fields(v)...)
		return nil
	})
	fs.IntVar(&o.nice, "nice", 0, "the LAN manager's nice value, -20 to 19 (negative needs root): on a shared machine, -10 keeps its CPU mostly its own")
	fs.BoolVar(&o.keep, "keep", false, "keep the work dir (LAN manager log and data)")
	fs.BoolVar(&o.insecure, "insecure", false, "run the LAN manager with -insecure (plain HTTP and WebSockets, masters link with its token) instead of TLS, where each master joins with a token and links with its certificate")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	size, ok := configs[o.config]
	if !ok {
		return o, fmt.Errorf("-config %q: want small or large", o.config)
	}
	if o.masters == 0 {
		o.masters = size[0]
	}
	if o.needs == 0 {
		o.needs = size[1]
	}
	if o.maxProcs == 0 && o.masters > 0 && o.singleRate >= 0 && o.timeout > 0 {
		share := func(n int64) int { return int((n + int64(o.masters) - 1) / int64(o.masters)) }
		o.maxProcs = 2*share(int64(o.needs)) + share(o.singles())
	}
	return o, o.check()
}

func (o options) check() error {
	switch {
	case o.masters < 1 || o.masters > maxMasters:
		return fmt.Errorf("-masters %d: want 1 to %d", o.masters, maxMasters)
	case o.needs < 1:
		return fmt.Errorf("-needs %d: want at least 1", o.needs)
	case o.batch < 1 || o.batch > 10_000:
		// 10,000 needs stay well under the admin API's 1 MiB body limit.
		return fmt.Errorf("-batch %d: want 1 to 10000", o.batch)
	case o.singleRate < 0 || o.singleRate > 1000:
		return fmt.Errorf("-single-rate %v: want 0 to 1000 per second", o.singleRate)
	case o.burstRate < 0:
		return fmt.Errorf("-burst-rate %v: want 0 (no limit) or more", o.burstRate)
	case o.timeout <= 0:
		return fmt.Errorf("-timeout %v: want more than 0", o.timeout)
	case o.nice < -20 || o.nice > 19:
		return fmt.Errorf("-nice %d: want -20 to 19", o.nice)
	case o.maxProcs < 0:
		return fmt.Errorf("-max-processes %d: want 0 (twice a master's share) or more", o.maxProcs)
	case int64(o.maxProcs)*int64(o.masters) < int64(o.needs)+o.singles():
		return fmt.Errorf("-max-processes %d: %d masters hold at most %d services, fewer than the %d needs and up to %d single needs",
			o.maxProcs, o.masters, o.maxProcs*o.masters, o.needs, o.singles())
	}
	return nil
}

// singles is the most single needs a run adds.
func (o options) singles() int64 { return int64(o.singleRate*o.timeout.Seconds()) + 1 }

func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseOptions(args, os.Stderr)
	if err != nil {
		return err
	}
	res, err := runBench(ctx, o)
	if res != nil {
		res.print(stdout)
		if o.out != "" {
			if werr := os.WriteFile(o.out, []byte(res.markdown()), 0o644); werr != nil && err == nil {
				err = werr
			}
		}
	}
	return err
}
