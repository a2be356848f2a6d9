//go:build linux

package main

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQuickFloor runs the reference supervisor through the whole command
// in -quick mode: build, starts, kills (each replaced on its port), idle
// sampling, stop (the bench checks no port still accepts) and report.
func TestQuickFloor(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the C reference supervisor")
	}
	if _, err := findCC(); err != nil {
		t.Skip(err)
	}
	md := runReport(t, 2*time.Minute, "-quick", "-only", "floor", "-kills", "5", "-idle", "1s", "-fs", "tmp")
	wantAll(t, md, []string{
		"| metric | floor |",
		"(b) kill -9 → accepting again, p99 of 5 |",
		"- floor (b) slowest kills: ",
		"- floor is a reference, not a peer: `bench/floor-c/floor.c`",
		"- floor: reference, bench/floor-c/floor.c built with `",
	})
	wantMeasured(t, md, "allex only")
}

// TestFloorArgsAndEarlyStop: floor refuses bad arguments with a usage
// error, and a SIGTERM before the start ends it cleanly with no child.
func TestFloorArgsAndEarlyStop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the C reference supervisor")
	}
	cc, err := findCC()
	if err != nil {
		t.Skip(err)
	}
	repo, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "floor")
	if _, _, err := buildCProgram(ctx, repo, cc, floorCSource, bin, floorFlags); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage: floor <child> <first port> <n>"},
		{[]string{"/bin/true", "0", "3"}, "floor: bad first port 0 or count 3"},
		{[]string{"/bin/true", "65535", "3"}, "floor: bad first port 65535 or count 3"},
		{[]string{"/bin/true", "15000", "x"}, "floor: bad first port 15000 or count x"},
	} {
		cmd := exec.CommandContext(ctx, bin, tc.args...)
		out, err := cmd.CombinedOutput()
		if code := exitCode(err); code != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("floor %q: exit %d, output %q; want 2 and %q", tc.args, code, out, tc.want)
		}
	}

	cmd := exec.CommandContext(ctx, bin, "/bin/false", "15000", "3")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("first line %q (%v), want ready", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM before the start: %v, want exit 0", err)
	}
}
