//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// floorCSource is the reference supervisor, built with the C compiler.
const floorCSource = "bench/floor-c/floor.c"

// floorFlags build it with the C library: its own start is not timed.
var floorFlags = []string{"-O2", "-Wall", "-Wextra"}

// floorSystem is a reference, not a peer: bench/floor-c/floor.c restarts a
// dead child the moment waitpid returns it and does nothing else. Its
// times are what the machine itself takes (the kill's delivery, the
// exit, a wake-up, clone and exec, the child's start, the prober), so
// they show how much of each system's time is its own, and how far below
// a peer any supervisor's tail can get on this machine.
type floorSystem struct{ bin string }

func (*floorSystem) name() string { return "floor" }

func (f *floorSystem) prepare(ctx context.Context, o *options) (string, error) {
	cc, err := findCC()
	if err != nil {
		return "", err
	}
	f.bin = filepath.Join(o.work, "floor")
	cmdline, warnings, err := buildCProgram(ctx, o.repo, cc, floorCSource, f.bin, floorFlags)
	if err != nil {
		return "", err
	}
	logWarnings(o, cmdline, warnings)
	return fmt.Sprintf("reference, %s built with `%s`", floorCSource, cmdline), nil
}

// launch starts floor, waits for its "ready", then times from its SIGUSR1
// (it starts every child then) until every port accepts, as for the
// peers.
func (f *floorSystem) launch(ctx context.Context, o *options, n int) (_ instance, _ timing, err error) {
	// stop: SIGTERM makes floor kill -9 its children and reap them.
	in := &procInstance{grace: time.Minute}
	dir, list, addrs, err := dirAndPorts(o, "floor", n)
	if err != nil {
		return nil, timing{}, err
	}
	in.list = list
	logPath := filepath.Join(dir, "out.log")
	in.p, err = startProc("floor", dir, logPath, nil, f.bin, o.tinysrv, strconv.Itoa(list[0]), strconv.Itoa(n))
	if err != nil {
		return nil, timing{}, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, in.stop())
		}
	}()
	if err := pollUntil(ctx, time.Minute, in.p, func() error {
		b, err := os.ReadFile(logPath)
		if err == nil && !strings.Contains(string(b), "ready\n") {
			err = errors.New("no ready line yet")
		}
		return err
	}); err != nil {
		return nil, timing{}, fmt.Errorf("floor not ready: %w\n%s", err, in.p.tail())
	}
	start := time.Now()
	if err := syscall.Kill(in.p.pid(), syscall.SIGUSR1); err != nil {
		return nil, timing{}, fmt.Errorf("floor: start: %w", err)
	}
	d, err := waitAllAccept(ctx, addrs, start, 5*time.Minute)
	if err != nil {
		return nil, timing{}, fmt.Errorf("%w\n%s", err, in.p.tail())
	}
	return in, timing{ready: d, accept: d}, nil
}
