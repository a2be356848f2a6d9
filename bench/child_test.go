//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childVariants are the builds of the tiny child that TestChild and
// BenchmarkChildStart run, where they can be built.
var childVariants = []string{"freestanding", "libc", "go"}

// buildChildVariant builds variant name of the child to bin, the way the
// bench would: freestanding is -child c's C build where freestanding.h
// supports the platform, libc is -child libc's (static, else dynamic), go
// is -child go's. skip says why the variant cannot be built here; warnings
// is the C compiler's output.
func buildChildVariant(ctx context.Context, repo, name, bin string) (skip, warnings string, err error) {
	if name == "go" {
		return "", "", goBuild(ctx, &options{repo: repo}, bin, childGoPkg)
	}
	cc, err := findCC()
	if err != nil {
		return err.Error(), "", nil
	}
	builds := []cBuild{freestandingBuild}
	if name == "libc" {
		builds = cBuilds("libc", runtime.GOOS, runtime.GOARCH)
	} else if !freestandingOK(runtime.GOOS, runtime.GOARCH) {
		return "no freestanding build for " + runtime.GOOS + "/" + runtime.GOARCH, "", nil
	}
	_, cmdline, warnings, _, err := buildFirst(ctx, repo, cc, bin, builds)
	if err != nil {
		return "", "", err
	}
	if strings.TrimSpace(warnings) != "" {
		warnings = cmdline + " warned:\n" + warnings
	}
	return "", warnings, nil
}

// TestChild starts every build of the tiny child that can be built here
// (freestanding C, C with the C library, Go) on loopback ports and checks
// they behave the same: answer with their pid on the port from argv[1],
// $PORT or $ALLEX_TCP_PORT (in that order), and exit 1 with the same
// message on a bad port or when the port is taken.
func TestChild(t *testing.T) {
	repo, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	for _, name := range childVariants {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(dir, "tinysrv-"+name)
			skip, warnings, err := buildChildVariant(ctx, repo, name, bin)
			if err != nil {
				t.Fatal(err)
			}
			if skip != "" {
				t.Skip(skip)
			}
			if warnings != "" {
				t.Error(warnings)
			}
			testChild(t, bin)
		})
	}
}

// TestChildBuilds: -child c tries the freestanding build first where
// freestanding.h supports the platform; -child libc never does.
func TestChildBuilds(t *testing.T) {
	for _, tc := range []struct {
		child, goos, goarch string
		freestanding        bool
	}{
		{"c", "linux", "amd64", true},
		{"c", "linux", "arm64", true},
		{"c", "linux", "riscv64", false},
		{"c", "linux", "386", false},
		{"c", "freebsd", "amd64", false},
		{"libc", "linux", "amd64", false},
		{"libc", "linux", "arm64", false},
	} {
		bs := cBuilds(tc.child, tc.goos, tc.goarch)
		var whats []string
		for _, b := range bs {
			whats = append(whats, b.what)
		}
		want := []string{libcStaticBuild.what, libcDynamicBuild.what}
		if tc.freestanding {
			want = append([]string{freestandingBuild.what}, want...)
		}
		if !slices.Equal(whats, want) {
			t.Errorf("cBuilds(%q, %s/%s) = %q, want %q", tc.child, tc.goos, tc.goarch, whats, want)
		}
	}
	if !slices.Contains(freestandingBuild.flags, "-DTINYSRV_FREESTANDING") || !slices.Contains(freestandingBuild.flags, "-nostdlib") {
		t.Errorf("freestanding flags %q", freestandingBuild.flags)
	}
}

// TestChildInfo: the report names the C build that ran, with its command
// line.
func TestChildInfo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the C child")
	}
	if _, err := findCC(); err != nil {
		t.Skip(err)
	}
	repo, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, child := range []string{"c", "libc"} {
		var log bytes.Buffer
		o := &options{child: child, repo: repo, work: t.TempDir(), ns: []int{1}, log: &log}
		if err := buildChild(ctx, o); err != nil {
			t.Fatal(err)
		}
		const prefix = "child: C (bench/tinysrv-c/tinysrv.c), built with `"
		if !strings.HasPrefix(o.childInfo, prefix) {
			t.Errorf("-child %s: childInfo %q lacks %q", child, o.childInfo, prefix)
		}
		freestanding := child == "c" && freestandingOK(runtime.GOOS, runtime.GOARCH)
		if got := strings.Contains(o.childInfo, " -DTINYSRV_FREESTANDING ") && strings.Contains(o.childInfo, "(freestanding: no C library; "); got != freestanding {
			t.Errorf("-child %s: childInfo %q: freestanding %v, want %v", child, o.childInfo, got, freestanding)
		}
		if len(o.notes) > 0 {
			t.Errorf("-child %s: notes %q", child, o.notes)
		}
	}
}

// TestChildErrnoText: freestanding.h words each error as Go's syscall
// package (and, but for the case of the first letter, glibc's strerror)
// does, so the freestanding child prints what the others print.
func TestChildErrnoText(t *testing.T) {
	repo, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(repo, "bench/tinysrv-c/freestanding.h"))
	if err != nil {
		t.Fatal(err)
	}
	errnos := map[string]syscall.Errno{
		"EADDRINUSE": syscall.EADDRINUSE, "EADDRNOTAVAIL": syscall.EADDRNOTAVAIL, "EACCES": syscall.EACCES,
		"EPERM": syscall.EPERM, "EAFNOSUPPORT": syscall.EAFNOSUPPORT, "EMFILE": syscall.EMFILE,
		"ENFILE": syscall.ENFILE, "ENOBUFS": syscall.ENOBUFS, "ENOMEM": syscall.ENOMEM,
		"EINVAL": syscall.EINVAL, "EBADF": syscall.EBADF,
	}
	entries := regexp.MustCompile(`\{ (E[A-Z]+), "([^"]*)" \}`).FindAllStringSubmatch(string(src), -1)
	if len(entries) < len(errnos) {
		t.Fatalf("found %d errno texts in freestanding.h, want at least %d", len(entries), len(errnos))
	}
	for _, m := range entries {
		e, ok := errnos[m[1]]
		if !ok {
			t.Errorf("freestanding.h words %s: add it to this test", m[1])
			continue
		}
		if m[2] != e.Error() {
			t.Errorf("freestanding.h words %s %q, Go %q", m[1], m[2], e.Error())
		}
	}
}

// BenchmarkChildStart measures what one start of each child build costs:
// each iteration execs it on a loopback port, waits until it accepts, then
// SIGKILLs and reaps it. child-cpu-ms/op is the child's own CPU (user and
// system, exec included, from wait4), the cost every supervisor pays per
// start; ns/op is wall time, polling included.
func BenchmarkChildStart(b *testing.B) {
	repo, err := moduleRoot()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := b.TempDir()
	for _, name := range childVariants {
		bin := filepath.Join(dir, "tinysrv-"+name)
		skip, _, buildErr := buildChildVariant(ctx, repo, name, bin)
		b.Run(name, func(b *testing.B) {
			if buildErr != nil {
				b.Fatal(buildErr)
			}
			if skip != "" {
				b.Skip(skip)
			}
			port, err := freeBlock(1)
			if err != nil {
				b.Fatal(err)
			}
			var cpu time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				cpu += startChild(b, bin, port)
			}
			b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "child-cpu-ms/op")
		})
	}
}

// startChild starts bin on port, waits until it accepts (10 s at most),
// SIGKILLs and reaps it, and returns the CPU it used.
func startChild(b *testing.B, bin string, port int) time.Duration {
	cmd := exec.Command(bin, strconv.Itoa(port))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	a := addr(port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			b.Fatalf("%s: not accepting within 10s: %v\n%s", a, err, stderr.String())
		}
		time.Sleep(100 * time.Microsecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		b.Fatal(err)
	}
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		b.Fatalf("child did not die of the kill: %v\n%s", err, stderr.String())
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

func testChild(t *testing.T, bin string) {
	const usage = "tinysrv: want a port as argv[1], $PORT or $ALLEX_TCP_PORT"
	t.Run("answers", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string // %d is the port
			env  []string // %d is the port
		}{
			{name: "argv", args: []string{"%d"}, env: []string{"PORT=nonsense", "ALLEX_TCP_PORT=nonsense"}},
			{name: "PORT", env: []string{"PORT=%d", "ALLEX_TCP_PORT=nonsense"}},
			{name: "empty argv", args: []string{""}, env: []string{"PORT=%d", "ALLEX_TCP_PORT=nonsense"}},
			{name: "ALLEX_TCP_PORT", env: []string{"PORT=", "ALLEX_TCP_PORT=%d"}},
			{name: "empty argv and PORT", args: []string{"", "ignored"}, env: []string{"PORT=", "ALLEX_TCP_PORT=%d"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				port, err := freeBlock(1)
				if err != nil {
					t.Fatal(err)
				}
				args := make([]string, len(tc.args))
				for i, a := range tc.args {
					args[i] = strings.ReplaceAll(a, "%d", strconv.Itoa(port))
				}
				env := make([]string, len(tc.env))
				for i, e := range tc.env {
					env[i] = strings.ReplaceAll(e, "%d", strconv.Itoa(port))
				}
				cmd, stderr := childCmd(bin, env, args...)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				exited := make(chan error, 1)
				go func() { exited <- cmd.Wait() }()
				defer func() {
					_ = cmd.Process.Kill()
					<-exited
				}()
				a := addr(port)
				deadline := time.Now().Add(10 * time.Second)
				for {
					pid, err := readPID(a)
					if err == nil {
						if pid != cmd.Process.Pid {
							t.Fatalf("%s answered pid %d, want %d", a, pid, cmd.Process.Pid)
						}
						break
					}
					select {
					case err := <-exited:
						t.Fatalf("child exited before answering: %v\n%s", err, stderr)
					default:
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s: no answer within 10s: %v\n%s", a, err, stderr)
					}
					time.Sleep(5 * time.Millisecond)
				}
				// It keeps answering, one connection after the other.
				for i := 0; i < 3; i++ {
					if pid, err := readPID(a); err != nil || pid != cmd.Process.Pid {
						t.Fatalf("connection %d: pid %d, %v; want %d", i+2, pid, err, cmd.Process.Pid)
					}
				}
				// A prober that leaves without reading must not kill it
				// (SIGPIPE) or stop the accept loop.
				for i := 0; i < 20; i++ {
					c, err := net.DialTimeout("tcp", a, time.Second)
					if err != nil {
						t.Fatal(err)
					}
					_ = c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
				if pid, err := readPID(a); err != nil || pid != cmd.Process.Pid {
					t.Fatalf("after abandoned connections: pid %d, %v; want %d", pid, err, cmd.Process.Pid)
				}
			})
		}
	})
	t.Run("bad port", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			env  []string
		}{
			{},
			{args: []string{""}},
			{args: []string{"x"}},
			{args: []string{"0"}},
			{args: []string{"-1"}},
			{args: []string{"+80"}},
			{args: []string{"80a"}},
			{args: []string{"65536"}},
			{args: []string{"99999999999999999999"}},
			{env: []string{"PORT=http"}},
			{env: []string{"ALLEX_TCP_PORT=70000"}},
			{args: []string{""}, env: []string{"PORT=", "ALLEX_TCP_PORT="}},
			{args: []string{"x"}, env: []string{"PORT=80"}},
		} {
			cmd, stderr := childCmd(bin, tc.env, tc.args...)
			err := runBounded(cmd)
			if code := exitCode(err); code != 1 {
				t.Errorf("args %q env %q: %v (exit %d), want exit 1", tc.args, tc.env, err, code)
			}
			if got := stderr.String(); got != usage+"\n" {
				t.Errorf("args %q env %q: stderr %q, want %q", tc.args, tc.env, got, usage)
			}
		}
	})
	t.Run("port taken", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		cmd, stderr := childCmd(bin, nil, strconv.Itoa(port))
		err = runBounded(cmd)
		if code := exitCode(err); code != 1 {
			t.Errorf("%v (exit %d), want exit 1", err, code)
		}
		// The same words from every build: the C one lowers the first
		// letter of glibc's strerror, as Go's.
		want := "tinysrv: listen tcp 127.0.0.1:" + strconv.Itoa(port) + ": bind: address already in use\n"
		if got := stderr.String(); got != want {
			t.Errorf("stderr %q, want %q", got, want)
		}
	})
}

// childCmd runs bin with env on top of the test's environment without
// $PORT and $ALLEX_TCP_PORT.
func childCmd(bin string, env []string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	cmd := exec.Command(bin, args...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PORT=") && !strings.HasPrefix(e, "ALLEX_TCP_PORT=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	return cmd, &stderr
}

// runBounded runs cmd, killing it if it has not exited within 10 s.
func runBounded(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	timer := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	return cmd.Wait()
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// TestChildFallback: with -child c and no C compiler on PATH the bench
// runs the Go child and says so in the report instead of failing.
func TestChildFallback(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the Go child")
	}
	repo, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip(err)
	}
	// A PATH with go and nothing else.
	pathDir := t.TempDir()
	if err := os.Symlink(goBin, filepath.Join(pathDir, "go")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", pathDir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log bytes.Buffer
	o := &options{child: "c", repo: repo, work: t.TempDir(), ns: []int{1}, log: &log}
	if err := buildChild(ctx, o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(o.tinysrv); err != nil {
		t.Fatalf("no child built: %v", err)
	}
	if !strings.HasPrefix(o.childInfo, "child: Go (./bench/tinysrv)") || !strings.Contains(o.childInfo, "fallback") {
		t.Errorf("childInfo %q does not say the Go child ran as a fallback", o.childInfo)
	}
	md := report(o, nil, []string{o.childInfo})
	if !strings.Contains(md, "- child: -child c asked for the C child, but there is no C compiler (cc or gcc) on PATH: ran the Go child") {
		t.Errorf("report lacks the fallback note:\n%s", md)
	}
	if !strings.Contains(log.String(), "no C compiler") {
		t.Errorf("log lacks the fallback: %q", log.String())
	}
	// -child libc asks for that build: no fallback.
	o = &options{child: "libc", repo: repo, work: t.TempDir(), ns: []int{1}, log: &log}
	if err := buildChild(ctx, o); err == nil || !strings.Contains(err.Error(), "-child libc: no C compiler") {
		t.Errorf("-child libc without a C compiler: %v, want an error", err)
	}
}

// TestChildFreestandingFallback: when the freestanding build fails, -child
// c runs the C library build and says so in the report.
func TestChildFreestandingFallback(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the C child")
	}
	if !freestandingOK(runtime.GOOS, runtime.GOARCH) {
		t.Skip("no freestanding build for " + runtime.GOOS + "/" + runtime.GOARCH)
	}
	cc, err := findCC()
	if err != nil {
		t.Skip(err)
	}
	repo, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// A cc first on PATH that refuses the freestanding build.
	pathDir := t.TempDir()
	script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
	if [ "$a" = -DTINYSRV_FREESTANDING ]; then
		echo no freestanding here >&2
		exit 1
	fi
done
exec '%s' "$@"
`, cc)
	if err := os.WriteFile(filepath.Join(pathDir, "cc"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", pathDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log bytes.Buffer
	o := &options{child: "c", repo: repo, work: t.TempDir(), ns: []int{1}, log: &log}
	if err := buildChild(ctx, o); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(o.childInfo, "child: C (bench/tinysrv-c/tinysrv.c), built with `cc -O2 ") || !strings.Contains(o.childInfo, "(C library, ") {
		t.Errorf("childInfo %q does not name the C library build", o.childInfo)
	}
	if len(o.notes) != 1 || !strings.HasPrefix(o.notes[0], "child: the freestanding C child did not build (cc -DTINYSRV_FREESTANDING ") {
		t.Errorf("notes %q lack the fallback", o.notes)
	}
	if !strings.Contains(log.String(), "no freestanding here") {
		t.Errorf("log lacks the compiler's output: %q", log.String())
	}
}

// TestChildFlag: -child takes c, libc and go.
func TestChildFlag(t *testing.T) {
	for _, child := range []string{"c", "libc", "go"} {
		o, err := parseFlags([]string{"-child", child}, &bytes.Buffer{})
		if err != nil || o.child != child {
			t.Errorf("-child %s: %v", child, err)
		}
	}
	if _, err := parseFlags([]string{"-child", "freestanding"}, &bytes.Buffer{}); err == nil {
		t.Error("-child freestanding: no error")
	}
}
