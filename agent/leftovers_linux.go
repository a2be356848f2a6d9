//go:build linux

package agent

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/allex-go/allex/internal/procfs"
)

// processStart reads the start time of process pid; 0 if gone.
func processStart(pid int) uint64 {
	st, err := procfs.ReadStat(pid)
	if err != nil {
		return 0
	}
	return st.StartTime
}

// killGroupsNow stops leftover children's groups together: SIGTERM to
// all, one shared grace, then SIGKILL to the groups still alive, and a
// short wait for those to die so their ports are free. One group at a
// time, n children that ignore SIGTERM held up the start n times the grace.
func killGroupsNow(pgids []int) {
	for _, g := range pgids {
		_ = syscall.Kill(-g, syscall.SIGTERM)
	}
	alive := waitGroups(pgids, 3*time.Second)
	for _, g := range alive {
		_ = syscall.Kill(-g, syscall.SIGKILL)
	}
	waitGroups(alive, 2*time.Second)
}

// waitGroups waits until no group has a live member or d passes, and
// returns the groups still alive.
func waitGroups(pgids []int, d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		var alive []int
		for _, g := range pgids {
			if groupAlive(g) {
				alive = append(alive, g)
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		pgids = alive
		time.Sleep(50 * time.Millisecond)
	}
}

// groupAlive reports whether process group pgid has a member that is not a
// zombie. kill(-pgid, 0) alone counts zombies, and a leftover is an orphan
// whose zombie lingers until PID 1 reaps it, which some inits (containers,
// VMs) do only every few seconds or never: each leftover then cost the
// whole grace. A zombie has closed its files, so its ports are free. A
// group that cannot be signalled is not waited for; one whose members
// cannot be listed is.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	alive, err := procfs.GroupAlive(pgid)
	return alive || err != nil
}

// strayGroups lists the process groups led by children of an earlier
// master on this socket. The state journal records each child just after
// its spawn, so a master killed in between leaves a child it never
// recorded (under need churn, about one per kill). Every child carries
// ALLEX_MASTER_SOCKET in its environment, the socket path belongs to one
// master at a time, and each child leads its own process group.
func strayGroups(socket string) []int {
	if socket == "" {
		return nil
	}
	want := []byte("\x00ALLEX_MASTER_SOCKET=" + socket + "\x00")
	self := os.Getpid()
	pids, err := procfs.Pids()
	if err != nil {
		return nil
	}
	var out []int
	for _, pid := range pids {
		if pid == self {
			continue
		}
		st, err := procfs.ReadStat(pid)
		if err != nil || st.Pgrp != pid || !st.Live() {
			continue // gone, or not a live group leader
		}
		env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil {
			continue // gone, or another user's
		}
		if bytes.Contains(append([]byte{0}, env...), want) {
			out = append(out, pid)
		}
	}
	return out
}
