package needs

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/allex-go/allex/lanwire"
)

// Hello builds the hello of a new session: every copy this master holds,
// with pid 0 for one that is starting or between two runs, so the LAN
// manager keeps them rather than giving their needs away.
func (s *State) Hello() lanwire.Hello {
	capa := s.cfg.Capacity()
	h := lanwire.Hello{
		MachineID: s.cfg.MachineID,
		Identity:  s.cfg.Identity,
		Address:   s.cfg.Address,
		Version:   s.cfg.Version,
		Capacity:  capa,
		Modules:   slices.Sorted(maps.Keys(s.modules)),
		Protocol:  lanwire.Placement,
	}
	// Frames queued before the link dropped were lost; the hello's
	// capacity is what the new session knows.
	s.capLast, s.capKnown = capa, true
	for _, inst := range slices.Sorted(maps.Keys(s.copies)) {
		c := s.copies[inst]
		h.Running = append(h.Running, lanwire.RunningService{
			Instance: inst, Module: c.need.Module, Epoch: c.epoch, PID: c.pid, Ports: c.ports, StartedAt: c.startedAt,
		})
	}
	return h
}

// Frame handles a frame from the LAN manager.
func (s *State) Frame(now time.Duration, typ string, payload any) {
	switch f := payload.(type) {
	case *lanwire.Grant:
		s.grant(f)
	case *lanwire.Approved:
		s.log.Info("service published", "instance", f.Service.Instance, "epoch", f.Service.Epoch, "ports", f.Service.Ports)
	case *lanwire.Rejected:
		s.log.Warn("LAN manager rejected the service; stopping it", "instance", f.Instance, "reason", f.Reason)
		s.stopEpoch(f.Instance, f.Epoch, f.Reason)
	case *lanwire.Stop:
		s.log.Info("LAN manager asked to stop a service", "instance", f.Instance, "epoch", f.Epoch, "reason", f.Reason)
		s.stopEpoch(f.Instance, f.Epoch, f.Reason)
	case *lanwire.Error:
		s.log.Warn("LAN manager refused a frame", "ref", f.Ref, "message", f.Message)
	default:
		s.log.Warn("unexpected frame from the LAN manager", "type", typ)
	}
}

// stopEpoch stops the copy of that epoch. A stop of an older epoch is
// stale and ignored; one of a copy not held here is confirmed at once.
func (s *State) stopEpoch(inst string, epoch uint64, why string) {
	c := s.copies[inst]
	switch {
	case c == nil:
		s.send(lanwire.TypeDown, &lanwire.Down{Instance: inst, Epoch: epoch, Reason: "not running on this master"})
	case c.epoch != epoch:
		s.log.Info("ignoring a stop of another epoch", "instance", inst, "epoch", epoch, "held", c.epoch)
	default:
		s.stop(inst, why)
	}
}

// grant starts a copy the LAN manager placed here. One this master
// cannot take now is declined, so it goes elsewhere; one it can never run
// as it is (Check) is declined as final, with the reason.
func (s *State) grant(g *lanwire.Grant) {
	n := g.Need
	decline := func(why string) {
		s.log.Info("declining a granted need", "instance", n.Instance, "epoch", g.Epoch, "why", why)
		s.send(lanwire.TypeDecline, &lanwire.Decline{Instance: n.Instance, Epoch: g.Epoch, Reason: why})
	}
	switch c := s.copies[n.Instance]; {
	case c != nil && c.epoch == g.Epoch:
		return
	case c != nil:
		decline(fmt.Sprintf("an earlier copy (epoch %d) is still stopping here", c.epoch))
	case s.draining:
		decline("the master is shutting down")
	case !s.modules[n.Module]:
		decline(fmt.Sprintf("module %q is not configured on this master", n.Module))
	case s.cfg.Busy(n.Instance):
		decline("a local process of this master has that instance name")
	case s.cfg.MaxProcesses > 0 && len(s.copies) >= s.cfg.MaxProcesses:
		decline(fmt.Sprintf("no free capacity (%d need children)", s.cfg.MaxProcesses))
	default:
		if err := s.cfg.Check(n); err != nil {
			s.log.Warn("cannot take a granted need", "instance", n.Instance, "epoch", g.Epoch, "why", err)
			s.send(lanwire.TypeDecline, &lanwire.Decline{Instance: n.Instance, Epoch: g.Epoch, Reason: err.Error(), Final: true})
			return
		}
		s.copies[n.Instance] = &copyState{need: n, epoch: g.Epoch}
		s.out = append(s.out, Effect{Kind: DoStart, Need: n, Epoch: g.Epoch})
	}
}

// Started records the ports of a copy's child the agent started.
func (s *State) Started(inst string, epoch uint64, ports lanwire.Ports) {
	if c := s.copies[inst]; c != nil && c.epoch == epoch {
		c.ports = ports
	}
}

// StartFailed gives a copy back when its child could not be started.
func (s *State) StartFailed(inst string, epoch uint64, err error) {
	if c := s.copies[inst]; c != nil && c.epoch == epoch {
		delete(s.copies, inst)
		s.send(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: inst, Epoch: epoch, Error: err.Error()})
	}
}
