package lanstate

import (
	"fmt"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// Hello opens a session for a master: it refuses an identity that is not
// the machine's while the machine may still run copies, replaces an older
// session of the same master, welcomes it, and reconciles the copies it
// reports with those the state gives it.
func (s *State) Hello(now time.Time, sid SessionID, h *lanwire.Hello) {
	if s.refuseRevoked(sid, h) {
		return
	}
	m := s.machines[h.MachineID]
	if m != nil && m.identity != "" && m.identity != h.Identity {
		if m.sess != nil || len(m.copies) > 0 {
			s.refuse(sid, m, h)
			return
		}
		s.log.Warn("machine id taken over by a new master identity", "machine", m.id, "old", short(m.identity), "new", short(h.Identity))
	}
	if m == nil {
		m = s.machineFor(h.MachineID)
	}
	if old := m.sess; old != nil {
		s.log.Info("new session replaces the old one", "machine", m.id)
		delete(s.sessions, old.id)
		s.leavePlacement(old)
		s.fx.Closes = append(s.fx.Closes, Close{Session: old.id, Code: lanwire.CloseReplaced, Reason: "replaced by a new session of this master"})
	}
	sess := &session{id: sid, m: m, modules: map[string]bool{}, placement: h.Protocol >= lanwire.Placement}
	for _, mod := range h.Modules {
		sess.modules[mod] = true
	}
	s.sessions[sid] = sess
	s.link(m.id, true)
	m.sess, m.identity, m.address, m.capacity, m.lastSeen, m.endsAt = sess, h.Identity, h.Address, h.Capacity, now, time.Time{}
	if want := (store.Machine{ID: m.id, Identity: m.identity, Address: m.address}); m.stored != want {
		m.stored = want
		s.dirtyMach[m.id] = true
	}
	s.log.Info("master connected", "machine", m.id, "address", h.Address, "modules", h.Modules, "running", len(h.Running))
	s.send(sess, lanwire.TypeWelcome, &lanwire.Welcome{SessionID: string(sid), Timings: s.cfg.Timings})
	s.reconcile(now, m, h.Running)
	for _, i := range m.copies {
		// Their grant deadlines run again while the master is connected.
		s.schedule(i)
	}
	s.joinPlacement(sess)
	s.offers = true
}

func (s *State) refuse(sid SessionID, m *machine, h *lanwire.Hello) {
	where := "is connected from " + m.address
	if m.sess == nil {
		where = fmt.Sprintf("may still run %d services there until %s", len(m.copies), m.endsAt.UTC().Format(time.RFC3339))
	}
	msg := fmt.Sprintf("machine id %q belongs to another master (identity %s, which %s); this master is %s at %s. "+
		"Give each master its own machineid in allexmasterconfig.json (or -machine-id); "+
		"a master that replaces a dead one takes its id over once the old one is fenced",
		m.id, short(m.identity), where, short(h.Identity), h.Address)
	s.log.Error("refused a master: machine id in use by another identity", "machine", m.id, "identity", short(h.Identity), "address", h.Address, "holder", short(m.identity))
	s.fx.Sends = append(s.fx.Sends, Send{Session: sid, Type: lanwire.TypeError, Payload: &lanwire.Error{Ref: lanwire.TypeHello, Message: msg}})
	s.fx.Closes = append(s.fx.Closes, Close{Session: sid, Code: lanwire.CloseRefused, Reason: "machine id in use"})
}

func short(identity string) string {
	if len(identity) > 8 {
		return identity[:8]
	}
	return identity
}

// reconcile matches the copies a master reports with its copies here:
// matching ones are kept (a running one not yet published gets its port
// check), unknown or stale ones are told to stop, and copies it no longer
// reports have ended.
func (s *State) reconcile(now time.Time, m *machine, running []lanwire.RunningService) {
	reported := map[string]bool{}
	for _, r := range running {
		if reported[r.Instance] {
			continue
		}
		reported[r.Instance] = true
		i := s.insts[r.Instance]
		if i == nil || i.rec.Copy == nil || i.rec.Copy.Machine != m.id || i.rec.Copy.Epoch != r.Epoch {
			reported[r.Instance] = false
			s.sendTo(m, lanwire.TypeStop, &lanwire.Stop{Instance: r.Instance, Epoch: r.Epoch, Reason: s.notYours(i, m, r.Epoch)})
			continue
		}
		if r.Module != i.rec.Need.Module {
			s.stopCopy(i, fmt.Sprintf("instance is module %q, not %q", i.rec.Need.Module, r.Module))
			continue
		}
		s.readopt(now, m, i, r)
	}
	for name, i := range m.copies {
		if !reported[name] {
			s.copyGone(now, i, "not running on its master after reconnect")
		}
	}
}

// notYours says why a reported copy is not the master's.
func (s *State) notYours(i *inst, m *machine, epoch uint64) string {
	switch {
	case i == nil:
		return "no such need"
	case i.rec.Copy == nil:
		return fmt.Sprintf("epoch %d is over; the need is not granted to anyone", epoch)
	case i.rec.Copy.Machine != m.id:
		return fmt.Sprintf("the need is granted to machine %s (epoch %d)", i.rec.Copy.Machine, i.rec.Copy.Epoch)
	}
	return fmt.Sprintf("epoch %d is stale; the current one is %d", epoch, i.rec.Copy.Epoch)
}

// readopt keeps a copy its master reported after a reconnect.
func (s *State) readopt(now time.Time, m *machine, i *inst, r lanwire.RunningService) {
	c := i.rec.Copy
	switch c.Phase {
	case store.PhaseStopping:
		s.sendTo(m, lanwire.TypeStop, &lanwire.Stop{Instance: i.name(), Epoch: c.Epoch, Reason: "the need was removed or its copy failed"})
	case store.PhaseGranted:
		if r.PID == 0 {
			// Between two runs: its next spawned report is awaited anew.
			i.checking = 0
			c.GrantedAt = now
			s.touch(i)
			return
		}
		if i.checking == 0 {
			s.log.Info("re-adopting a running copy", "instance", i.name(), "machine", m.id, "epoch", c.Epoch)
			s.startCheck(i, m, lanwire.Spawned{Instance: r.Instance, Epoch: r.Epoch, PID: r.PID, Ports: r.Ports, StartedAt: r.StartedAt})
		}
	case store.PhasePublished:
		old := *c.Service
		if r.PID == 0 {
			s.unpublish(i)
			c.Phase, c.GrantedAt = store.PhaseGranted, now
			s.touch(i)
			return
		}
		if old.PID == r.PID && old.Address == m.address {
			return
		}
		rec := old
		rec.PID, rec.Ports, rec.Address = r.PID, r.Ports, m.address
		if !r.StartedAt.IsZero() {
			rec.StartedAt = r.StartedAt
		}
		c.Service = &rec
		s.touch(i)
		if old.PID != rec.PID {
			// Restarted by its master while unlinked: watchers see the old
			// process go and the new one come.
			s.log.Info("service restarted by its master while unlinked", "instance", i.name(), "pid", old.PID, "newpid", rec.PID)
			s.emit(adminapi.EventDown, old)
			s.emit(adminapi.EventUp, rec)
		}
	}
}

// Ended records that a session's link is gone. Its machine's copies stay
// its own until the fence the way it ended allows (lanwire/fencing.go):
// lastHeard is when the LAN manager last heard from the master on it, at
// when the link ended.
func (s *State) Ended(now time.Time, sid SessionID, how End, lastHeard, at time.Time) {
	sess := s.sessions[sid]
	if sess == nil {
		return
	}
	delete(s.sessions, sid)
	s.leavePlacement(sess)
	m := sess.m
	if m.sess != sess {
		return
	}
	m.sess, m.lastSeen = nil, lastHeard
	s.link(m.id, false)
	s.offers = true
	for _, i := range m.copies {
		s.settled(i)
	}
	if len(m.copies) == 0 {
		s.log.Info("master disconnected", "machine", m.id)
		s.dropMachine(m)
		return
	}
	t := s.cfg.Timings
	switch how {
	case EndNoCopies:
		m.endsAt = now
	case EndVanished:
		m.endsAt = minTime(lastHeard.Add(t.Lease()), at.Add(t.ExitFence())).Add(s.cfg.Margin)
	default:
		m.endsAt = lastHeard.Add(t.Lease() + s.cfg.Margin)
	}
	s.away[m] = true
	s.log.Warn("master disconnected; its copies are its own until its fence", "machine", m.id, "copies", len(m.copies), "until", m.endsAt, "how", how)
	if !now.Before(m.endsAt) {
		s.fence(m, now, "its master stopped them")
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// fence ends every copy of a machine that is surely not running them any
// more, and forgets the machine.
func (s *State) fence(m *machine, now time.Time, why string) {
	s.log.Warn("machine fenced: its copies end", "machine", m.id, "copies", len(m.copies), "why", why)
	for _, i := range m.copies {
		s.copyGone(now, i, why)
	}
	s.dropMachine(m)
}

func (e End) String() string {
	switch e {
	case EndVanished:
		return "vanished"
	case EndNoCopies:
		return "no copies"
	}
	return "lease"
}
