//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// The tiny child's two versions, relative to the module root. The C one is
// the default: a Go binary's runtime start costs CPU, the same for every
// supervisor, which with hundreds of children on two cores puts a floor
// under every system and hides the differences the bench is about.
const (
	childCSource = "bench/tinysrv-c/tinysrv.c"
	childGoPkg   = "./bench/tinysrv"
)

// cBuild is one way to build the C child: the flags cc gets, and what the
// report calls it.
type cBuild struct {
	flags []string
	what  string
}

// The C child's builds. It compiles without warnings with each of them.
//
// The freestanding one links no C library (bench/tinysrv-c/freestanding.h
// has the little it needs, on Linux x86_64 and aarch64): on a VM most of
// a static glibc program's start is its CPU feature detection, whose
// CPUID instructions trap to the hypervisor (BenchmarkChildStart compares
// the builds). That cost is the same under every supervisor and hides
// their differences when hundreds of children start.
//
// Otherwise it is linked statically when the C library allows, so each
// start skips the dynamic loader, and dynamically when there is no static
// C library.
var (
	freestandingBuild = cBuild{
		flags: []string{"-DTINYSRV_FREESTANDING", "-O2", "-Wall", "-Wextra", "-static", "-nostdlib",
			"-fno-stack-protector", "-fno-builtin", "-fno-asynchronous-unwind-tables"},
		what: "freestanding: no C library",
	}
	libcStaticBuild  = cBuild{flags: []string{"-O2", "-Wall", "-Wextra", "-static"}, what: "C library, static"}
	libcDynamicBuild = cBuild{flags: []string{"-O2", "-Wall", "-Wextra"}, what: "C library, dynamic"}
)

// freestandingOK says whether freestanding.h supports goos/goarch.
func freestandingOK(goos, goarch string) bool {
	return goos == "linux" && (goarch == "amd64" || goarch == "arm64")
}

// cBuilds lists the builds to try, best first, for -child child ("c" or
// "libc") on goos/goarch: -child libc skips the freestanding build, so
// numbers measured before it existed can be reproduced.
func cBuilds(child, goos, goarch string) []cBuild {
	var bs []cBuild
	if child == "c" && freestandingOK(goos, goarch) {
		bs = append(bs, freestandingBuild)
	}
	return append(bs, libcStaticBuild, libcDynamicBuild)
}

// findCC returns the C compiler to build the C child with: cc, else gcc.
func findCC() (string, error) {
	for _, name := range []string{"cc", "gcc"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no C compiler (cc or gcc) on PATH")
}

// buildCProgram compiles src (relative to the module root repo) to out with
// cc. It returns the command line (with out shown as $WORK/<name>), and
// the compiler's output, which is empty unless it warned.
func buildCProgram(ctx context.Context, repo, cc, src, out string, flags []string) (cmdline, output string, err error) {
	args := append(append([]string(nil), flags...), "-o", out, src)
	shown := append(append([]string{filepath.Base(cc)}, flags...), "-o", "$WORK/"+filepath.Base(out), src)
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
// compiler it falls back to the Go child, with a note in the report; -child
// libc has no fallback, since it asks for that build.
func buildChild(ctx context.Context, o *options) error {
	o.tinysrv = filepath.Join(o.work, "tinysrv")
	if o.child == "c" || o.child == "libc" {
		cc, err := findCC()
		if err == nil {
			return buildC(ctx, o, cc)
		}
		if o.child == "libc" {
			return fmt.Errorf("-child libc: %w", err)
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

// buildC builds the C child with cc, the first of cBuilds that works. A
// failed freestanding build is noted in the report: the C library's start
// is then part of every start.
func buildC(ctx context.Context, o *options, cc string) error {
	builds := cBuilds(o.child, runtime.GOOS, runtime.GOARCH)
	i, cmdline, warnings, failed, err := buildFirst(ctx, o.repo, cc, o.tinysrv, builds)
	if err != nil {
		return fmt.Errorf("build the C child (-child go runs the Go one instead): %w", err)
	}
	logWarnings(o, cmdline, warnings)
	if i > 0 && builds[0].what == freestandingBuild.what {
		note := fmt.Sprintf("child: the freestanding C child did not build (%s), ran the C library build instead: "+
			"every start then includes the C library's start-up, the same for every system.", oneLine(failed[0].Error()))
		fmt.Fprintf(o.log, "bench: %s\n%v\n", note, failed[0])
		o.notes = append(o.notes, note)
	}
	version := "unknown version"
	if v, err := run(ctx, 10*time.Second, nil, cc, "--version"); err == nil {
		version = oneLine(strings.TrimSpace(v))
	}
	o.childInfo = fmt.Sprintf("child: C (%s), built with `%s` (%s; %s)", childCSource, cmdline, builds[i].what, version)
	return nil
}

// logWarnings shows what a C build that worked warned about, if anything.
func logWarnings(o *options, cmdline, warnings string) {
	if w := strings.TrimSpace(warnings); w != "" {
		fmt.Fprintf(o.log, "bench: %s warned:\n%s\n", cmdline, w)
	}
}

// buildFirst builds the C child to out with the first of builds that
// works and returns its index, command line and compiler output, with the
// errors of the builds tried before it; err joins them all when none
// worked.
func buildFirst(ctx context.Context, repo, cc, out string, builds []cBuild) (i int, cmdline, warnings string, failed []error, err error) {
	for i, b := range builds {
		cmdline, warnings, err := buildCProgram(ctx, repo, cc, childCSource, out, b.flags)
		if err == nil {
			return i, cmdline, warnings, failed, nil
		}
		failed = append(failed, err)
	}
	return 0, "", "", failed, errors.Join(failed...)
}
