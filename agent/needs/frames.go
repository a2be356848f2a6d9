package needs

import (
	"fmt"
	"maps"
	"reflect"
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
	case *lanwire.Needs:
		s.offered = f.Needs
		s.claim(now)
	case *lanwire.Grant:
		delete(s.claims, f.Need.Instance)
		s.grant(f)
	case *lanwire.Deny:
		delete(s.claims, f.Instance)
		s.log.Debug("claim denied", "instance", f.Instance, "reason", f.Reason)
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

// claim bids for the offered needs this master can run, while there is
// capacity left.
func (s *State) claim(now time.Duration) {
	if !s.connected || s.draining || len(s.offered) == 0 {
		return
	}
	capa := s.cfg.Capacity()
	pending := len(s.claims)
	for _, n := range s.offered {
		if s.cfg.MaxProcesses > 0 && capa.Running+pending >= s.cfg.MaxProcesses {
			break
		}
		if !s.modules[n.Module] || s.copies[n.Instance] != nil || s.cfg.Busy(n.Instance) {
			continue
		}
		if _, ok := s.claims[n.Instance]; ok {
			continue
		}
		if r, ok := s.refused[n.Instance]; ok && reflect.DeepEqual(r, n) {
			continue
		}
		s.claims[n.Instance] = now
		pending++
		s.send(lanwire.TypeClaim, &lanwire.Claim{Instance: n.Instance})
	}
}

// grant starts a copy this master won.
func (s *State) grant(g *lanwire.Grant) {
	n := g.Need
	fail := func(why string) {
		s.log.Warn("cannot take a granted need", "instance", n.Instance, "epoch", g.Epoch, "why", why)
		s.send(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: n.Instance, Epoch: g.Epoch, Error: why})
	}
	switch c := s.copies[n.Instance]; {
	case c != nil && c.epoch == g.Epoch:
		return
	case c != nil:
		fail(fmt.Sprintf("an earlier copy (epoch %d) is still stopping here", c.epoch))
	case s.draining:
		fail("the master is shutting down")
	case !s.modules[n.Module]:
		fail(fmt.Sprintf("module %q is not configured on this master", n.Module))
	case s.cfg.Busy(n.Instance):
		fail("a local process of this master has that instance name")
	default:
		if err := s.cfg.Check(n); err != nil {
			s.refuse(n)
			fail(err.Error())
			return
		}
		s.copies[n.Instance] = &copyState{need: n, epoch: g.Epoch}
		s.out = append(s.out, Effect{Kind: DoStart, Need: n, Epoch: g.Epoch})
	}
}

// maxRefused bounds the needs remembered as refused; past it they are
// forgotten, and claimed (and refused) once more.
const maxRefused = 1024

// refuse remembers a need this master cannot run, so it does not claim it
// again while it is unchanged.
func (s *State) refuse(n lanwire.Need) {
	if len(s.refused) >= maxRefused {
		clear(s.refused)
	}
	s.refused[n.Instance] = n
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
