//go:build !windows

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/allex-go/allex/internal/e2e"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the output of this run")

// TestMain builds the real binaries (e2e.Main); the test binary also runs
// as a child of the master (e2e.HelperMain).
func TestMain(m *testing.M) { e2e.Main(m, "../..", e2e.HelperMain) }

// result is one allexctl run as a user sees it.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

// ctl runs the real allexctl binary with args.
func ctl(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2e.Bins.Ctl, args...)
	// The caller's ALLEX_SOCKET, ALLEX_LAN... would change what runs.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ALLEX_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("allexctl %v: %v", args, err)
	}
	return r
}

// normalizer replaces what changes from run to run (pids, ports, times,
// durations, paths, identities) with placeholders. Pids and ports are
// recognised by where they stand, not by value: on a busy machine a pid
// can equal a port.
type normalizer struct {
	literal   []string // old, new pairs, longest first
	portLo    int      // PROTOCOL=PORT with PORT in [portLo, portHi] is a port the master gave
	portHi    int
	stateWord bool // start and restart print a state and pid that depend on timing
}

var (
	rfc3339   = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	clock     = regexp.MustCompile(`\b\d\d:\d\d:\d\d\.\d{3}\b`)
	duration  = regexp.MustCompile(`\b(\d+h)?(\d+m)?\d+(\.\d+)?(s|ms|µs)\b`)
	pidWord   = regexp.MustCompile(`\bpid(\s+)[1-9]\d*\b`)
	portEq    = regexp.MustCompile(`\b(tcp|http|ws)=(\d+)\b`)
	portRange = regexp.MustCompile(`\b\d+-\d+(, \d+ in use)`)
	cellSep   = regexp.MustCompile(`\t| {2,}`)
	header    = regexp.MustCompile(`^[A-Z][A-Z ]*$`)
	trailing  = regexp.MustCompile(` +\n`)
	started   = regexp.MustCompile(`(?m)^(\S+)\t\w+\tpid \d+`)
)

func (n *normalizer) text(s string) string {
	for i := 0; i+1 < len(n.literal); i += 2 {
		s = strings.ReplaceAll(s, n.literal[i], n.literal[i+1])
	}
	if n.stateWord {
		s = started.ReplaceAllString(s, "$1\t<state>\tpid <pid?>")
	}
	s = rfc3339.ReplaceAllString(s, "<time>")
	s = clock.ReplaceAllString(s, "<clock>")
	s = duration.ReplaceAllString(s, "<dur>")
	s = pidWord.ReplaceAllString(s, "pid$1<pid>")
	s = portRange.ReplaceAllString(s, "<port>-<port>$1")
	return portEq.ReplaceAllStringFunc(s, func(m string) string {
		name, port, _ := strings.Cut(m, "=")
		if v, err := strconv.Atoi(port); err == nil && n.portHi > 0 && v >= n.portLo && v <= n.portHi {
			return name + "=<port>"
		}
		return m
	})
}

// table lays tables out again, as placeholders change column widths,
// without trailing blanks; below a header row, the PID and PORT columns
// become placeholders.
func table(s string) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	volatile := map[int]string{}
	for _, line := range strings.SplitAfter(s, "\n") {
		if line == "" {
			continue
		}
		nl := strings.HasSuffix(line, "\n")
		cells := cellSep.Split(strings.TrimRight(line, "\n"), -1)
		if isHeader(cells) {
			volatile = map[int]string{}
			for i, c := range cells {
				switch c {
				case "PID":
					volatile[i] = "<pid>"
				case "PORT":
					volatile[i] = "<port>"
				}
			}
		} else {
			for i, ph := range volatile {
				if i < len(cells) && cells[i] != "0" && cells[i] != "-" {
					cells[i] = ph
				}
			}
		}
		fmt.Fprint(tw, strings.Join(cells, "\t"))
		if nl {
			fmt.Fprint(tw, "\n")
		}
	}
	tw.Flush()
	return trailing.ReplaceAllString(b.String(), "\n")
}

func isHeader(cells []string) bool {
	if len(cells) < 2 {
		return false
	}
	for _, c := range cells {
		if !header.MatchString(c) {
			return false
		}
	}
	return true
}

func (n *normalizer) render(rs []result) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "$ allexctl %s\n", n.text(strings.Join(r.args, " ")))
		fmt.Fprintf(&b, "exit %d\n", r.code)
		// Tables go to stdout; stderr keeps its layout (flag usage).
		for _, part := range []struct{ name, text string }{{"stdout", table(n.text(r.stdout))}, {"stderr", n.text(r.stderr)}} {
			if part.text == "" {
				continue
			}
			fmt.Fprintf(&b, "-- %s --\n%s", part.name, part.text)
			if !strings.HasSuffix(part.text, "\n") {
				b.WriteString("\n")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// golden compares the runs, normalized, with testdata/name.golden, or
// rewrites it with -update.
func golden(t *testing.T, name string, n *normalizer, rs ...result) {
	t.Helper()
	got := n.render(rs)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		g, w := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		i := 0
		for i < len(g) && i < len(w) && g[i] == w[i] {
			i++
		}
		t.Errorf("%s differs from line %d (run with -update to accept):\n--- got\n%s\n--- want\n%s", path, i+1, got, want)
	}
}
