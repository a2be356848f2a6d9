package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/allex-go/allex/lanpki"
)

// A worker process runs masters [first, first+count) and talks to the
// bench over its stdin and stdout, one line each way:
//
//	stdout: "ready"                 every master was welcomed
//	stdout: "lost I ERROR"          master I's link ended unasked
//	stdin:  "drop I"                master I dies (its link ends without a close frame)
//	stdout: "dropped I N"           it held N copies
//	stdin:  EOF                     close every link, print the counts, exit
//	stdout: "stats grants=... ..."  the masters' frame counts
type workerArgs struct {
	url, token   string
	first, count int
	max          int
	dialTimeout  time.Duration
	// join is the parsed -token when -url is wss://: each master joins
	// with it and links with the certificate it got.
	join *lanpki.Token
}

func parseWorkerArgs(args []string) (workerArgs, error) {
	var w workerArgs
	fs := flag.NewFlagSet("scale worker", flag.ContinueOnError)
	fs.StringVar(&w.url, "url", "", "LAN manager link URL")
	fs.StringVar(&w.token, "token", "", "bearer token")
	fs.IntVar(&w.first, "first", 0, "index of the first master")
	fs.IntVar(&w.count, "count", 0, "masters to run")
	fs.IntVar(&w.max, "max", 0, "each master's maxprocesses")
	fs.DurationVar(&w.dialTimeout, "dial-timeout", time.Minute, "bound on connecting every master")
	if err := fs.Parse(args); err != nil {
		return w, err
	}
	if w.url == "" || w.token == "" || w.first < 0 || w.count <= 0 || w.max < 0 {
		return w, fmt.Errorf("worker: want -url, -token, -first >= 0, -count > 0, -max >= 0; got %q", args)
	}
	switch {
	case strings.HasPrefix(w.url, "ws://"):
	case strings.HasPrefix(w.url, "wss://"):
		tok, err := lanpki.ParseToken(w.token)
		if err != nil || tok.CAHash == "" {
			return w, fmt.Errorf("worker: want a join token carrying the CA's fingerprint (K10…::id.secret) with a wss:// -url (%v)", err)
		}
		w.join = &tok
	default:
		return w, fmt.Errorf("worker: want a ws:// or wss:// -url; got %q", w.url)
	}
	return w, nil
}

// workerMain is a worker process's main; it returns the exit code.
func workerMain(args []string, stdin io.Reader, stdout io.Writer) int {
	w, err := parseWorkerArgs(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := runWorker(w, stdin, stdout); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}

func runWorker(w workerArgs, stdin io.Reader, stdout io.Writer) error {
	acc, err := newAcceptor()
	if err != nil {
		return err
	}
	defer acc.stop()
	var outMu sync.Mutex
	say := func(format string, a ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(stdout, format+"\n", a...)
	}
	var n counters
	masters := make([]*master, w.count)
	for k := range masters {
		idx := w.first + k
		masters[k] = newMaster(idx, w.max, TakeAll{}, acc, &n, func(err error) {
			say("lost %d %s", idx, strings.ReplaceAll(err.Error(), "\n", " "))
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.dialTimeout)
	err = connectAll(ctx, masters, w)
	cancel()
	if err != nil {
		return err
	}
	say("ready")
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		i, err := parseDrop(sc.Text(), w.first, w.count)
		if err != nil {
			return err
		}
		held, _ := masters[i-w.first].drop()
		say("dropped %d %d", i, held)
	}
	for _, m := range masters {
		m.drop()
	}
	say("stats grants=%d declines=%d approved=%d stops=%d errors=%d listenerrors=%d queuefull=%d accepted=%d",
		n.grants.Load(), n.declines.Load(), n.approved.Load(), n.stops.Load(), n.errors.Load(), n.listenErrors.Load(), n.queueFull.Load(), acc.accepted.Load())
	return nil
}

// parseDrop reads a "drop I" command for a worker of masters
// [first, first+count).
func parseDrop(line string, first, count int) (int, error) {
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "drop" {
		return 0, fmt.Errorf("unknown command %q (want \"drop I\")", line)
	}
	i, err := strconv.Atoi(f[1])
	if err != nil || i < first || i >= first+count {
		return 0, fmt.Errorf("drop %q: not a master of this worker (%d-%d)", f[1], first, first+count-1)
	}
	return i, nil
}

// connectAll connects the masters a few at a time, as masters booting
// together would; over TLS each joins first.
func connectAll(ctx context.Context, masters []*master, w workerArgs) error {
	const parallel = 8
	sem := make(chan struct{}, parallel)
	errs := make(chan error, len(masters))
	var wg sync.WaitGroup
	for _, m := range masters {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if w.join == nil {
				errs <- m.connect(ctx, w.url, http.Header{"Authorization": {"Bearer " + w.token}}, nil)
				return
			}
			cfg, err := m.join(ctx, lanBase(w.url), *w.join)
			if err == nil {
				err = m.connect(ctx, w.url, nil, cfg)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
