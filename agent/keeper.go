package agent

import (
	"time"

	"github.com/allex-go/allex/agent/spawner"
)

// keeperClient is the keeper (package keeper) as the agent uses it: it
// starts the children, and kills the copies' children when the lease ends
// or within the exit fence after this master's process ends.
type keeperClient interface {
	spawner.Launcher
	SetLease(until time.Duration)
	SetExitFence(d time.Duration)
	Close() error
}

// launcher is what the supervisors start children through: the keeper,
// or nil for their own fork/exec.
func (a *Agent) launcher() spawner.Launcher {
	if a.keeper == nil {
		return nil
	}
	return a.keeper
}

// leaseSink hands the lease to the keeper, which Run starts after the
// needs controller is made.
type leaseSink struct{ a *Agent }

func (l leaseSink) SetLease(until time.Duration) {
	if k := l.a.keeper; k != nil {
		k.SetLease(until)
	}
}

func (l leaseSink) SetExitFence(d time.Duration) {
	if k := l.a.keeper; k != nil {
		k.SetExitFence(d)
	}
}

// stopKeeper lets the keeper go once every child is stopped.
func (a *Agent) stopKeeper() {
	if a.keeper == nil {
		return
	}
	if err := a.keeper.Close(); err != nil {
		a.log.Warn("keeper did not stop cleanly", "error", err)
	}
}
