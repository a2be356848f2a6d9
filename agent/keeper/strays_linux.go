package keeper

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/internal/procfs"
)

// markVar is the environment variable whose entry marks a child's
// processes: the master gives each child its instance name there.
const markVar = "ALLEX_INSTANCE="

// instanceMark returns env's markVar entry, "" if none.
func instanceMark(env []string) string {
	for _, e := range env {
		if strings.HasPrefix(e, markVar) {
			return e
		}
	}
	return ""
}

// strays reports whether processes that the child pid (exited, not yet
// reaped) started live on, the mark of a program that daemonized: members
// of its process group, or processes that left the group (setsid, as a
// daemon does) and were reparented to the keeper, a subreaper, told by
// the child's mark in their environment. The group gets its SIGKILL from
// reapOne; the escaped processes, and their own groups, get theirs here.
// k.mu is held, so no child of the keeper is reaped (and its pid
// recycled) meanwhile.
func (k *keeper) strays(pid int, mark string) bool {
	pids, err := procfs.Pids()
	if err != nil {
		k.log.Warn("cannot look for processes left by an exited child", "pid", pid, "error", err)
		return false
	}
	self := os.Getpid()
	inGroup, escaped := 0, 0
	for _, p := range pids {
		if p == pid {
			continue
		}
		st, err := procfs.ReadStat(p)
		switch {
		case err != nil || !st.Live():
		case st.Pgrp == pid:
			inGroup++
		case st.Ppid == self && mark != "" && !k.isChildLocked(p) && hasEnv(p, mark):
			escaped++
			killEscaped(p, st.Pgrp)
		}
	}
	if inGroup+escaped == 0 {
		return false
	}
	k.log.Warn("a child exited 0 and left processes running: killing them", "pid", pid, "in_group", inGroup, "escaped", escaped)
	return true
}

func (k *keeper) isChildLocked(pid int) bool {
	_, ok := k.children[pid]
	return ok
}

// killEscaped SIGKILLs a process that left its child's group, with the
// group it leads if it made one.
func killEscaped(pid, pgrp int) {
	if pgrp == pid {
		signalGroup(pid, unix.SIGKILL)
		return
	}
	_ = unix.Kill(pid, unix.SIGKILL)
}

// hasEnv reports whether pid's environment, as it was at its exec, holds
// the entry e.
func hasEnv(pid int, e string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	entry := append([]byte(e), 0)
	return bytes.HasPrefix(b, entry) || bytes.Contains(b, append([]byte{0}, entry...))
}
