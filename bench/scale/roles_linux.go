package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// This binary is also the bench's other processes, told apart by the
// environment (so a test binary can be them too):
//
//	ALLEX_SCALE_CPUS=0,1  pin to these CPUs first, then exec again without it
//	ALLEX_SCALE_NICE=-10  with that nice value (with ALLEX_SCALE_CPUS)
//	ALLEX_SCALE_ROLE=worker  run masters (worker_linux.go)
//	ALLEX_SCALE_ROLE=exec    exec os.Args[1:] (the LAN manager, pinned)
const (
	envCPUs = "ALLEX_SCALE_CPUS"
	envRole = "ALLEX_SCALE_ROLE"
	envNice = "ALLEX_SCALE_NICE"
)

// dispatch runs this process as the role its environment names and
// returns its exit code; ok is false for the bench itself.
func dispatch() (code int, ok bool) {
	if cpus := os.Getenv(envCPUs); cpus != "" {
		err := pinAndExec(cpus)
		fmt.Fprintln(os.Stderr, "scale: pin:", err)
		return 1, true
	}
	switch role := os.Getenv(envRole); role {
	case "":
		return 0, false
	case "worker":
		return workerMain(os.Args[1:], os.Stdin, os.Stdout), true
	default:
		fmt.Fprintf(os.Stderr, "scale: %s=%q: want worker (exec is only run pinned)\n", envRole, role)
		return 2, true
	}
}

// pinAndExec sets this thread's CPU affinity and execs from it, so that
// every thread of the new program starts with that affinity (a Go
// program's threads cannot all be moved once they run). Only returns an
// error.
func pinAndExec(cpus string) error {
	set, err := parseCPUs(cpus)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("sched_setaffinity %s: %w", cpus, err)
	}
	if v := os.Getenv(envNice); v != "" {
		nice, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%s=%q: %w", envNice, v, err)
		}
		// Linux applies it to the calling thread; the program's threads
		// inherit it.
		if err := unix.Setpriority(unix.PRIO_PROCESS, 0, nice); err != nil {
			return fmt.Errorf("setpriority %d: %w", nice, err)
		}
	}
	env := without(without(os.Environ(), envCPUs), envNice)
	argv := os.Args
	target, err := os.Executable()
	if err != nil {
		return err
	}
	if os.Getenv(envRole) == "exec" {
		if len(os.Args) < 2 {
			return fmt.Errorf("%s=exec: no program to run", envRole)
		}
		argv, target, env = os.Args[1:], os.Args[1], without(env, envRole)
	}
	return syscall.Exec(target, argv, env)
}

// parseCPUs reads a comma-separated list of CPU numbers.
func parseCPUs(s string) (unix.CPUSet, error) {
	var set unix.CPUSet
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n >= 1024 {
			return set, fmt.Errorf("CPU list %q: %q is not a CPU number", s, f)
		}
		set.Set(n)
	}
	return set, nil
}

func formatCPUs(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// allowedCPUs lists the CPUs this process may run on.
func allowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	var out []int
	for c := 0; c < 1024 && len(out) < set.Count(); c++ {
		if set.IsSet(c) {
			out = append(out, c)
		}
	}
	return out, nil
}

func without(env []string, key string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// pinned returns a command running this binary on cpus as role, at
// nice (0: unchanged); for role "exec", args[0] is the program to run.
func pinned(cpus []int, nice int, role string, args ...string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(without(without(without(os.Environ(), envCPUs), envRole), envNice), envCPUs+"="+formatCPUs(cpus), envRole+"="+role)
	if nice != 0 {
		cmd.Env = append(cmd.Env, envNice+"="+strconv.Itoa(nice))
	}
	cmd.Stderr = os.Stderr
	return cmd, nil
}

// pinSelf moves every thread of this process to cpus; threads made later
// inherit it from the thread that makes them.
func pinSelf(cpus []int) error {
	set, err := parseCPUs(formatCPUs(cpus))
	if err != nil {
		return err
	}
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tids {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("sched_setaffinity thread %d: %w", tid, err)
		}
	}
	return nil
}
