package needs

import (
	"time"

	"github.com/allex-go/allex/lanwire"
)

// Child event kinds, from the agent's supervisor of a copy's child.
const (
	ChildRunning = iota // a run started (PID, StartedAt)
	ChildReady          // the run is ready (PID)
	ChildExited         // the run ended (PID, ExitCode, Signal, Reason)
	ChildBackoff        // another run follows after Delay
	ChildEnded          // the child is done for good (Reason)
)

// ChildEvent is what the agent tells about a copy's child.
type ChildEvent struct {
	Kind      int
	Instance  string
	PID       int
	StartedAt time.Time
	Delay     time.Duration
	ExitCode  int
	Signal    string
	Reason    string
}

// Child takes an event of a copy's child and reports it: spawned once a
// run is ready, down with restarting when a reported run ends and another
// follows, down or spawn_failed when the child is done (which also
// confirms a stop the LAN manager asked for).
func (s *State) Child(now time.Duration, ev ChildEvent) {
	c := s.copies[ev.Instance]
	if c == nil {
		return
	}
	switch ev.Kind {
	case ChildRunning:
		s.restarting(ev.Instance, c)
		c.pid, c.startedAt = ev.PID, ev.StartedAt
		s.reportCapacity(now)
	case ChildReady:
		if !c.up && !c.stopping && ev.PID == c.pid {
			c.up = true
			s.send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: ev.Instance, Epoch: c.epoch, PID: ev.PID, Ports: c.ports, StartedAt: c.startedAt})
		}
	case ChildExited:
		c.exit = ev
	case ChildBackoff:
		if ev.Delay > 0 {
			s.restarting(ev.Instance, c)
			c.pid = 0
		}
	case ChildEnded:
		delete(s.copies, ev.Instance)
		reason := orDefault(ev.Reason, orDefault(c.exit.Reason, "exited"))
		if c.up {
			s.send(lanwire.TypeDown, &lanwire.Down{Instance: ev.Instance, Epoch: c.epoch, PID: c.exit.PID, ExitCode: c.exit.ExitCode, Signal: c.exit.Signal, Reason: reason})
		} else {
			s.send(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: ev.Instance, Epoch: c.epoch, Error: reason})
		}
		s.reportCapacity(now)
	}
}

// restarting reports a run that was reported spawned as down, restarting:
// the LAN manager takes the record down and keeps the copy granted here.
// It is sent when the next run starts or its backoff begins, so its work
// on both sides does not compete with the restart itself.
func (s *State) restarting(inst string, c *copyState) {
	if !c.up {
		return
	}
	c.up = false
	e := c.exit
	s.send(lanwire.TypeDown, &lanwire.Down{Instance: inst, Epoch: c.epoch, PID: e.PID, ExitCode: e.ExitCode, Signal: e.Signal, Reason: orDefault(e.Reason, "restarting"), Restarting: true})
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
