package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/allex-go/allex/internal/procfs"
)

// statFields are the fields of /proc/<pid>/stat after the command name,
// which may hold spaces: field N of the line is statFields[N-3].
func statFields(pid int) ([][]byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
	if len(f) < 17 {
		return nil, fmt.Errorf("/proc/%d/stat: short line", pid)
	}
	return f, nil
}

// niceOf is pid's nice value (field 19).
func niceOf(pid int) (int, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(f[16]))
}

// cpuTime is the CPU (user and system) pid has used.
func cpuTime(pid int) (time.Duration, error) {
	t, err := procfs.CPUTicks(pid)
	return ticks(t), err
}

// ticks converts clock ticks to a duration.
func ticks(n uint64) time.Duration { return time.Duration(n) * time.Second / procfs.ClockTicks }

// memory is what /proc/<pid>/status says of a process's resident memory.
type memory struct{ peakKB, nowKB int64 }

func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmHWM":
			m.peakKB = n
		case "VmRSS":
			m.nowKB = n
		}
	}
	if m.peakKB == 0 {
		return m, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
	}
	return m, nil
}

// fdCount is how many descriptors pid has open.
func fdCount(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	return len(names), err
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// stealTime is the CPU time the hypervisor took from this machine, over
// all CPUs; 0 where /proc/stat has no steal column.
func stealTime() time.Duration {
	n, _ := procfs.StealTicks()
	return ticks(n)
}

// cpusAllowed is /proc/<pid>/status's Cpus_allowed_list, e.g. "1" or "0-3".
func cpusAllowed(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("/proc/%d/status: no Cpus_allowed_list", pid)
}

// runDelay is how long pid's threads have waited on a run queue for a
// CPU (the second field of each thread's schedstat): on a busy machine,
// the time the LAN manager wanted its CPU and did not get it.
func runDelay(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tids, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tids {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return 0, fmt.Errorf("%s/%s/schedstat: short line", dir, t.Name())
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/schedstat: %w", dir, t.Name(), err)
		}
		sum += time.Duration(n)
	}
	return sum, nil
}
