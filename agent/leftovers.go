package agent

import (
	"slices"

	"github.com/allex-go/allex/agent/statefile"
)

// The state journal (package statefile) lists the live children so that a
// master that was killed without stopping them (kill -9, OOM) can clean
// them up on its next start instead of leaving orphans that hold ports.

// recordRunning adds a child's new run to the state journal, with its
// process start time, read once here, so that a recycled pid is never
// mistaken for the child.
func (a *Agent) recordRunning(p *proc, pid int, startTicks uint64) {
	if a.journal == nil {
		return
	}
	if startTicks == 0 {
		startTicks = processStart(pid)
	}
	a.journal.Add(p.spec.GetInstance(), pid, startTicks)
}

// recordExited removes a run of a child from the state journal once its
// process group is dead. The spawner ends every run it started with an
// exit event, so this is the only removal needed.
func (a *Agent) recordExited(p *proc, pid int) {
	a.journal.Del(p.spec.GetInstance(), pid)
}

// closeState leaves the journal empty once every child has been stopped.
func (a *Agent) closeState() {
	if err := a.journal.Close(); err != nil {
		a.log.Warn("cannot close state journal", "error", err)
	}
}

// reapLeftovers kills the process groups of children a previous master
// left running: those its state journal lists, and those it started but had
// not recorded yet when it died (found by their master socket). Then it
// starts a fresh journal for this master's children.
func (a *Agent) reapLeftovers() {
	left, err := statefile.Load(a.opts.StateDir, a.log)
	if err != nil {
		a.log.Warn("cannot read state journal", "error", err)
	}
	var groups []int
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
	j, err := statefile.Open(a.opts.StateDir, a.log)
	if err != nil {
		// Leftovers of this master are then found by strayGroups alone.
		a.log.Warn("cannot start state journal; children are not recorded", "error", err)
		return
	}
	a.journal = j
}
