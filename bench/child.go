//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The tiny child's two versions, relative to the module root. The C one is
// the default: a Go binary's runtime start costs ~3 ms CPU, the same for
// every supervisor, which at N=500 on two cores is a floor of about a
// second under every system and hides the differences the bench is about.
const (
	childCSource = "bench/tinysrv-c/tinysrv.c"
	childGoPkg   = "./bench/tinysrv"
)

// cFlags are the flags the C child is built with; it compiles without
// warnings with them. It is linked statically when the C library allows
// (staticFlag), so each start skips the dynamic loader: the child's own
// start, the same under every system, then hides less of the supervisors'.
var cFlags = []string{"-O2", "-Wall", "-Wextra"}

const staticFlag = "-static"

// findCC returns the C compiler to build the C child with: cc, else gcc.
func findCC() (string, error) {
	for _, name := range []string{"cc", "gcc"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no C compiler (cc or gcc) on PATH")
}

// buildCChild compiles the C child to out with cc, from the module root
// repo. It returns the command line (with out shown as $WORK/<name>), and
// the compiler's output, which is empty unless it warned.
func buildCChild(ctx context.Context, repo, cc, out string, flags []string) (cmdline, output string, err error) {
	args := append(append([]string(nil), flags...), "-o", out, childCSource)
	shown := append(append([]string{filepath.Base(cc)}, flags...), "-o", "$WORK/"+filepath.Base(out), childCSource)
	cmdline = strings.Join(shown, " ")
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cc, args...)
	cmd.Dir = repo
	b, err := cmd.CombinedOutput()
	if err != nil {
		return cmdline, string(b), fmt.Errorf("%s: %w\n%s", cmdline, err, b)
	}
	return cmdline, string(b), nil
}

// buildChild builds the child chosen with -child into o.tinysrv and records
// what runs and how it was built for the report. With -child c and no C
// compiler it falls back to the Go child, with a note in the report.
func buildChild(ctx context.Context, o *options) error {
	o.tinysrv = filepath.Join(o.work, "tinysrv")
	if o.child == "c" {
		cc, err := findCC()
		if err == nil {
			cmdline, warnings, err := buildCChild(ctx, o.repo, cc, o.tinysrv, append(append([]string(nil), cFlags...), staticFlag))
			if err != nil {
				// No static C library installed: link dynamically.
				cmdline, warnings, err = buildCChild(ctx, o.repo, cc, o.tinysrv, cFlags)
			}
			if err != nil {
				return fmt.Errorf("build the C child (-child go runs the Go one instead): %w", err)
			}
			if w := strings.TrimSpace(warnings); w != "" {
				fmt.Fprintf(o.log, "bench: %s warned:\n%s\n", cmdline, w)
			}
			version := "unknown version"
			if v, err := run(ctx, 10*time.Second, nil, cc, "--version"); err == nil {
				version = oneLine(strings.TrimSpace(v))
			}
			o.childInfo = fmt.Sprintf("child: C (%s), built with `%s` (%s)", childCSource, cmdline, version)
			return nil
		}
		note := fmt.Sprintf("child: -child c asked for the C child, but there is %s: ran the Go child (%s) instead. "+
			"Every start then includes the Go runtime's own start (~3 ms CPU per child, the same for every system), "+
			"so start times are higher and ratios closer to 1 than with the C child.", err, childGoPkg)
		fmt.Fprintln(o.log, "bench: "+note)
		o.notes = append(o.notes, note)
	}
	if err := goBuild(ctx, o, o.tinysrv, childGoPkg); err != nil {
		return err
	}
	o.childInfo = fmt.Sprintf("child: Go (%s), built with `go build -o $WORK/tinysrv %s`", childGoPkg, childGoPkg)
	if o.child == "c" {
		o.childInfo += " (fallback: no C compiler)"
	}
	return nil
}
