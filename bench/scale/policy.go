package main

import "github.com/allex-go/allex/lanwire"

// Policy is what a simulated master decides about a grant the LAN
// manager placed on it; the rest of the link protocol (hello, pings,
// spawned, stops) is fixed in master.go. The LAN manager places needs
// (link protocol lanwire.Placement), so a master only runs or declines.
type Policy interface {
	// Decline says why the master will not run n now ("": it runs it).
	Decline(n lanwire.Need, v View) string
}

// View is what a master knows when it decides.
type View struct {
	// MaxProcesses is the most copies it runs (0: unlimited).
	MaxProcesses int
	// Running counts its copies.
	Running int
}

// TakeAll is a real master's policy (agent/needs): run every grant that
// fits its capacity, decline the others.
type TakeAll struct{}

// Decline implements Policy.
func (TakeAll) Decline(_ lanwire.Need, v View) string {
	if v.MaxProcesses > 0 && v.Running >= v.MaxProcesses {
		return "no free capacity"
	}
	return ""
}
