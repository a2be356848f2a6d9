package agent

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// stateFile lists the live children so that a master that was killed
// without stopping them (kill -9, OOM) can clean them up on its next
// start instead of leaving orphans that hold ports.
const stateFile = "children.json"

type leftover struct {
	Instance string `json:"instance"`
	PID      int    `json:"pid"`
	// Start is the process start time in clock ticks since boot, so a
	// recycled pid is never mistaken for our old child.
	Start uint64 `json:"start"`
}

func (a *Agent) writeState() {
	if a.opts.StateDir == "" {
		return
	}
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.mu.Lock()
	var live []leftover
	for _, p := range a.procs {
		if isDone(p) {
			continue
		}
		if pid := p.sup.PID(); pid > 0 {
			live = append(live, leftover{Instance: p.spec.GetInstance(), PID: pid})
		}
	}
	a.mu.Unlock()
	// A process's start time never changes, so each child's /proc entry
	// is read once, outside a.mu: rereading every child's on every change
	// made starting n children O(n²) and blocked the agent meanwhile.
	starts := make(map[leftover]uint64, len(live))
	for i := range live {
		key := leftover{Instance: live[i].Instance, PID: live[i].PID}
		st, ok := a.starts[key]
		if !ok {
			st = processStart(key.PID)
		}
		live[i].Start = st
		if st != 0 {
			starts[key] = st
		}
	}
	a.starts = starts
	b, err := json.Marshal(live)
	if err != nil {
		return
	}
	path := filepath.Join(a.opts.StateDir, stateFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		a.log.Warn("cannot write state file", "error", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		a.log.Warn("cannot write state file", "error", err)
	}
}

// reapLeftovers kills the process groups of children a previous master
// left running: those its state file lists, and those it started but had
// not recorded yet when it died (found by their master socket).
func (a *Agent) reapLeftovers() {
	var groups []int
	path := filepath.Join(a.opts.StateDir, stateFile)
	b, err := os.ReadFile(path)
	var left []leftover
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		a.log.Warn("cannot read state file", "path", path, "error", err)
	default:
		if err := json.Unmarshal(b, &left); err != nil {
			a.log.Warn("ignoring unreadable state file", "path", path, "error", err)
			left = nil
		}
	}
	for _, l := range left {
		if l.PID <= 0 || l.Start == 0 || processStart(l.PID) != l.Start {
			continue
		}
		a.log.Warn("stopping child left behind by a previous master", "instance", l.Instance, "pid", l.PID)
		groups = append(groups, l.PID)
	}
	for _, pid := range strayGroups(a.opts.Socket) {
		if !slices.Contains(groups, pid) {
			a.log.Warn("stopping unrecorded child left behind by a previous master", "pid", pid)
			groups = append(groups, pid)
		}
	}
	killGroupsNow(groups)
	if err == nil {
		_ = os.Remove(path)
	}
}
