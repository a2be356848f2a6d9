package main

import "github.com/allex-go/allex/lanwire"

// Policy is what a simulated master decides about the needs it is
// offered; the rest of the link protocol (hello, pings, grants, spawned,
// stops) is fixed in master.go. Today's LAN manager offers each master a
// needs list and grants the first claim of a need, so a master bids for
// what it can run; a placement that works otherwise changes this.
type Policy interface {
	// Claims returns the instances to claim from a needs list.
	Claims(offered []lanwire.Need, v View) []string
}

// View is what a master knows when it picks its claims.
type View struct {
	// MaxProcesses is the most copies it runs (0: unlimited).
	MaxProcesses int
	// Running counts its copies; Pending its claims not yet answered.
	Running, Pending int
	// Taken says whether it holds a copy of, or has claimed, the instance.
	Taken func(instance string) bool
}

// ClaimAll is a real master's policy (agent/needs): claim every offered
// need it does not hold, while copies and claims in flight fit its
// capacity.
type ClaimAll struct{}

// Claims implements Policy.
func (ClaimAll) Claims(offered []lanwire.Need, v View) []string {
	var out []string
	pending := v.Pending
	for _, n := range offered {
		if v.MaxProcesses > 0 && v.Running+pending >= v.MaxProcesses {
			break
		}
		if v.Taken(n.Instance) {
			continue
		}
		out = append(out, n.Instance)
		pending++
	}
	return out
}
