//go:build linux

package agent

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// processStart reads field 22 (starttime) of /proc/<pid>/stat; 0 if gone.
func processStart(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces and parentheses; fields start after
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
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
// whole grace. A zombie has closed its files, so its ports are free.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
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
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[2] != e.Name() || f[0] == "Z" || f[0] == "X" {
			continue // not a live group leader
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue // gone, or another user's
		}
		if bytes.Contains(append([]byte{0}, env...), want) {
			out = append(out, pid)
		}
	}
	return out
}
