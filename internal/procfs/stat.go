package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// Stat is what allex reads of /proc/<pid>/stat.
type Stat struct {
	// State is the one-letter state: R, S, D, T, Z (zombie), X (dead), ...
	State byte
	Ppid  int // the parent
	Pgrp  int
	// StartTime is field 22, in clock ticks since boot: with the pid it
	// names one process, since pids are recycled. 0 when the line is too
	// short to hold it.
	StartTime uint64
	// CPUTicks is utime+stime (fields 14 and 15), in clock ticks.
	CPUTicks uint64
	hasCPU   bool
}

// Live reports whether the process has not finished dying. A zombie has:
// the kernel closed its files (and so its listening ports) before it
// became one, and a zombie whose parent never reaps lingers forever.
func (s Stat) Live() bool { return s.State != 'Z' && s.State != 'X' }

// ParseStat parses the contents of /proc/<pid>/stat, whose second field
// (the command name) may itself hold spaces and parentheses: the fields
// that matter start after the last ')'.
func ParseStat(b []byte) (Stat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return Stat{}, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return Stat{}, false
	}
	pgrp, err := strconv.Atoi(string(f[2]))
	if err != nil {
		return Stat{}, false
	}
	st := Stat{State: f[0][0], Ppid: ppid, Pgrp: pgrp}
	if len(f) >= 13 {
		u, err1 := strconv.ParseUint(string(f[11]), 10, 64)
		s, err2 := strconv.ParseUint(string(f[12]), 10, 64)
		st.CPUTicks, st.hasCPU = u+s, err1 == nil && err2 == nil
	}
	if len(f) >= 20 {
		st.StartTime, _ = strconv.ParseUint(string(f[19]), 10, 64)
	}
	return st, true
}

// ReadStat reads and parses /proc/<pid>/stat; a process that is gone (or
// was never there) is an error.
func ReadStat(pid int) (Stat, error) {
	var buf [statBufSize]byte
	b, err := readSmall("/proc/"+strconv.Itoa(pid)+"/stat", buf[:])
	if err != nil {
		return Stat{}, err
	}
	st, ok := ParseStat(b)
	if !ok {
		return Stat{}, fmt.Errorf("procfs: /proc/%d/stat: unexpected format %q", pid, b)
	}
	return st, nil
}

// Pids lists the processes in /proc.
func Pids() ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
