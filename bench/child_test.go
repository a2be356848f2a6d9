//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestChild starts the built tiny children, C and Go, on loopback ports
// and checks they behave the same: answer with their pid on the port from
// argv[1], $PORT or $ALLEX_TCP_PORT (in that order), and exit 1 with a
// clear message on a bad port or when the port is taken.
func TestChild(t *testing.T) {
	repo, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	t.Run("c", func(t *testing.T) {
		cc, err := findCC()
		if err != nil {
			t.Skip(err)
		}
		bin := filepath.Join(dir, "tinysrv-c")
		cmdline, warnings, err := buildCChild(ctx, repo, cc, bin, append(append([]string(nil), cFlags...), staticFlag))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(warnings) != "" {
			t.Errorf("%s warned:\n%s", cmdline, warnings)
		}
		testChild(t, bin)
	})
	t.Run("go", func(t *testing.T) {
		bin := filepath.Join(dir, "tinysrv-go")
		if err := goBuild(ctx, &options{repo: repo}, bin, childGoPkg); err != nil {
			t.Fatal(err)
		}
		testChild(t, bin)
	})
}

func testChild(t *testing.T, bin string) {
	const usage = "tinysrv: want a port as argv[1], $PORT or $ALLEX_TCP_PORT"
	t.Run("answers", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			arg  bool     // the port as argv[1]
			env  []string // %d is the port
		}{
			{name: "argv", arg: true, env: []string{"PORT=nonsense", "ALLEX_TCP_PORT=nonsense"}},
			{name: "PORT", env: []string{"PORT=%d", "ALLEX_TCP_PORT=nonsense"}},
			{name: "ALLEX_TCP_PORT", env: []string{"PORT=", "ALLEX_TCP_PORT=%d"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				port, err := freeBlock(1)
				if err != nil {
					t.Fatal(err)
				}
				var args []string
				if tc.arg {
					args = []string{strconv.Itoa(port)}
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
		} {
			cmd, stderr := childCmd(bin, tc.env, tc.args...)
			err := runBounded(cmd)
			if code := exitCode(err); code != 1 {
				t.Errorf("args %q env %q: %v (exit %d), want exit 1", tc.args, tc.env, err, code)
			}
			if got := strings.TrimSpace(stderr.String()); got != usage {
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
		// strerror's wording is the C library's: compare ignoring case.
		want := "tinysrv: listen tcp 127.0.0.1:" + strconv.Itoa(port) + ": bind: address already in use"
		if got := strings.TrimSpace(stderr.String()); !strings.EqualFold(got, want) {
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
}
