package lanstate

import (
	"errors"
	"fmt"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// Frame handles one frame a master sent on a session Hello opened
// (claim, spawned, spawn_failed, down, capacity). Frames of an unknown or
// replaced session are dropped.
func (s *State) Frame(now time.Time, sid SessionID, typ string, payload any) {
	sess := s.sessions[sid]
	if sess == nil {
		return
	}
	sess.m.lastSeen = now
	switch f := payload.(type) {
	case *lanwire.Claim:
		s.claim(now, sess, f)
	case *lanwire.Spawned:
		s.spawned(sess, f)
	case *lanwire.SpawnFailed:
		s.spawnFailed(now, sess, f)
	case *lanwire.Down:
		s.down(now, sess, f)
	case *lanwire.Capacity:
		m := sess.m
		if m.capacity.Full() != f.Full() || m.capacity.MaxProcesses != f.MaxProcesses {
			s.offers = true
		}
		m.capacity = *f
	case *lanwire.Decline:
		s.decline(now, sess, f)
	case *lanwire.Hello:
		s.refuseFrame(sess, typ, errors.New("hello already received on this link"))
	default:
		s.refuseFrame(sess, typ, fmt.Errorf("%q frames are sent by the LAN manager, not by masters", typ))
	}
}

func (s *State) refuseFrame(sess *session, ref string, err error) {
	s.log.Warn("refused frame from master", "machine", sess.m.id, "ref", ref, "error", err)
	s.send(sess, lanwire.TypeError, &lanwire.Error{Ref: ref, Message: err.Error()})
}

// copyOf returns the instance whose current copy is this machine's under
// epoch, or nil.
func (s *State) copyOf(m *machine, instance string, epoch uint64) *inst {
	i := s.insts[instance]
	if i == nil || i.rec.Copy == nil || i.rec.Copy.Machine != m.id || i.rec.Copy.Epoch != epoch {
		return nil
	}
	return i
}

func (s *State) claim(now time.Time, sess *session, c *lanwire.Claim) {
	if sess.placement {
		s.refuseFrame(sess, lanwire.TypeClaim, fmt.Errorf("claim %s: a master speaking link protocol %d is granted needs, it does not claim them", c.Instance, lanwire.Placement))
		return
	}
	i := s.insts[c.Instance]
	reason := ""
	switch {
	case i == nil || i.rec.Removed:
		reason = "no such need"
	case i.rec.Copy != nil && i.rec.Copy.Phase == store.PhasePublished:
		reason = "already satisfied"
	case i.rec.Copy != nil:
		reason = "already granted"
	case sess.m.capacity.Full():
		reason = "no free capacity"
	default:
		reason = s.offerable(i, sess, now)
	}
	if reason != "" {
		s.send(sess, lanwire.TypeDeny, &lanwire.Deny{Instance: c.Instance, Reason: reason})
		return
	}
	s.grant(now, sess, i)
}

// setCopy gives an instance its copy and keeps the machine's index.
func (s *State) setCopy(i *inst, c *store.Copy) {
	i.rec.Copy = c
	i.checking = 0
	m := s.machineFor(c.Machine)
	m.copies[i.name()] = i
	s.loadChanged(m)
	s.touch(i)
}

func (s *State) spawned(sess *session, sp *lanwire.Spawned) {
	i := s.copyOf(sess.m, sp.Instance, sp.Epoch)
	if i == nil {
		s.refuseFrame(sess, lanwire.TypeSpawned, fmt.Errorf("spawned %s epoch %d: not a copy of this master (%s)", sp.Instance, sp.Epoch, s.notYours(s.insts[sp.Instance], sess.m, sp.Epoch)))
		s.send(sess, lanwire.TypeStop, &lanwire.Stop{Instance: sp.Instance, Epoch: sp.Epoch, Reason: "stale copy"})
		return
	}
	switch c := i.rec.Copy; {
	case c.Phase == store.PhaseStopping:
		s.send(sess, lanwire.TypeStop, &lanwire.Stop{Instance: sp.Instance, Epoch: sp.Epoch, Reason: "the copy is being stopped"})
	case c.Phase == store.PhasePublished:
		s.refuseFrame(sess, lanwire.TypeSpawned, fmt.Errorf("spawned %s: already published", sp.Instance))
	case i.checking != 0:
		s.refuseFrame(sess, lanwire.TypeSpawned, fmt.Errorf("spawned %s: already being checked", sp.Instance))
	default:
		s.log.Debug("copy spawned; checking its ports", "instance", sp.Instance, "machine", sess.m.id, "epoch", sp.Epoch)
		s.startCheck(i, sess.m, *sp)
	}
}

func (s *State) startCheck(i *inst, m *machine, sp lanwire.Spawned) {
	s.checkID++
	i.checking, i.spawn = s.checkID, sp
	s.fx.Checks = append(s.fx.Checks, Check{ID: s.checkID, Instance: i.name(), Address: m.address, Need: i.rec.Need, Ports: sp.Ports})
}

// CheckDone takes the result of a port check: the copy is published, or
// rejected (told to stop, and the need backs off). A result for a check
// that was overtaken (the copy ended, restarted or was reported again)
// is dropped.
func (s *State) CheckDone(now time.Time, instance string, id uint64, checkErr error) {
	i := s.insts[instance]
	if i == nil || i.checking != id || i.rec.Copy == nil || i.rec.Copy.Phase != store.PhaseGranted {
		return
	}
	sp := i.spawn
	i.checking, i.spawn = 0, lanwire.Spawned{}
	s.settled(i)
	c := i.rec.Copy
	m := s.machines[c.Machine]
	if checkErr != nil {
		s.fail(i, now, checkErr.Error())
		c.Phase = store.PhaseStopping
		s.sendTo(m, lanwire.TypeRejected, &lanwire.Rejected{Instance: instance, Epoch: c.Epoch, Reason: checkErr.Error()})
		return
	}
	started := sp.StartedAt
	if started.IsZero() {
		started = now
	}
	address := ""
	if m != nil {
		address = m.address
	}
	rec := lanwire.ServiceRecord{
		Instance: instance, Module: i.rec.Need.Module, MachineID: c.Machine, Epoch: c.Epoch,
		Address: address, Ports: sp.Ports, PID: sp.PID, Properties: i.rec.Need.Properties,
		StartedAt: started, PublishedAt: now,
	}
	c.Phase, c.Service = store.PhasePublished, &rec
	i.rec.Attempts, i.rec.NotBefore, i.rec.LastError = 0, time.Time{}, ""
	s.touch(i)
	s.log.Debug("service published", "instance", instance, "machine", c.Machine, "epoch", c.Epoch, "ports", sp.Ports)
	s.sendTo(m, lanwire.TypeApproved, &lanwire.Approved{Service: rec})
	s.emit(adminapi.EventUp, rec)
}

func (s *State) spawnFailed(now time.Time, sess *session, f *lanwire.SpawnFailed) {
	i := s.copyOf(sess.m, f.Instance, f.Epoch)
	if i == nil {
		s.refuseFrame(sess, lanwire.TypeSpawnFailed, fmt.Errorf("spawn_failed %s epoch %d: not a copy of this master", f.Instance, f.Epoch))
		return
	}
	if i.rec.Copy.Phase != store.PhaseStopping {
		s.fail(i, now, "spawn failed on "+sess.m.id+": "+f.Error)
	}
	s.endCopy(i)
}

func (s *State) down(now time.Time, sess *session, d *lanwire.Down) {
	i := s.copyOf(sess.m, d.Instance, d.Epoch)
	if i == nil {
		s.refuseFrame(sess, lanwire.TypeDown, fmt.Errorf("down %s epoch %d: not a copy of this master", d.Instance, d.Epoch))
		return
	}
	reason := d.Reason
	if reason == "" {
		reason = fmt.Sprintf("exit code %d %s", d.ExitCode, d.Signal)
	}
	c := i.rec.Copy
	switch c.Phase {
	case store.PhaseStopping:
		if d.Restarting {
			s.send(sess, lanwire.TypeStop, &lanwire.Stop{Instance: d.Instance, Epoch: d.Epoch, Reason: "the copy is being stopped"})
			return
		}
		s.endCopy(i)
	case store.PhasePublished:
		over := s.countDown(i.name(), now)
		s.unpublish(i)
		if over > 0 {
			s.crashLoop(i, now, over, reason)
		}
		switch {
		case !d.Restarting:
			s.endCopy(i)
		case over > 0:
			s.stopCopy(i, i.rec.LastError)
		default:
			// Restarting in place: the copy stays granted to this master.
			c.Phase, c.GrantedAt = store.PhaseGranted, now
			s.touch(i)
		}
	default: // granted
		if d.Restarting {
			// Died during its check: the next run is checked anew.
			i.checking = 0
			c.GrantedAt = now
			s.touch(i)
			return
		}
		s.fail(i, now, "child died before it was published: "+reason)
		s.endCopy(i)
	}
}

// crashLoop makes a need that went down over the crash-loop limit wait.
func (s *State) crashLoop(i *inst, now time.Time, over int, reason string) {
	i.rec.Attempts = over
	i.rec.NotBefore = now.Add(s.backoff(over))
	i.rec.LastError = fmt.Sprintf("crash loop: down %d times within %v (last: %s)", s.cfg.CrashLoopLimit+over, s.cfg.CrashLoopWindow, reason)
	s.touch(i)
	s.log.Warn("service down in a crash loop, need backs off", "instance", i.name(), "until", i.rec.NotBefore, "reason", reason)
}

// countDown records a down of a service and returns by how many downs the
// crash-loop window is over its limit (0: not in a crash loop).
func (s *State) countDown(name string, now time.Time) int {
	if s.cfg.CrashLoopLimit < 0 {
		return 0
	}
	recent := s.downs[name][:0]
	for _, t := range s.downs[name] {
		if now.Sub(t) < s.cfg.CrashLoopWindow {
			recent = append(recent, t)
		}
	}
	recent = append(recent, now)
	s.downs[name] = recent
	return max(len(recent)-s.cfg.CrashLoopLimit, 0)
}

// unpublish takes a copy's service out of the registry.
func (s *State) unpublish(i *inst) {
	c := i.rec.Copy
	if c == nil || c.Service == nil {
		return
	}
	s.emit(adminapi.EventDown, *c.Service)
	c.Service = nil
	if c.Phase == store.PhasePublished {
		c.Phase = store.PhaseGranted
	}
	s.touch(i)
}

// stopCopy tells the copy's master to stop it; the copy ends when the
// master reports it down, or with the master's fence.
func (s *State) stopCopy(i *inst, reason string) {
	c := i.rec.Copy
	if c == nil || c.Phase == store.PhaseStopping {
		return
	}
	s.unpublish(i)
	c.Phase = store.PhaseStopping
	i.checking = 0
	s.settled(i)
	s.touch(i)
	s.sendTo(s.machines[c.Machine], lanwire.TypeStop, &lanwire.Stop{Instance: i.name(), Epoch: c.Epoch, Reason: reason})
}

// endCopy ends an instance's copy: its need is offered again (after its
// backoff), or, when it was removed, it is forgotten.
func (s *State) endCopy(i *inst) {
	c := i.rec.Copy
	if c == nil {
		return
	}
	s.unpublish(i)
	if m := s.machines[c.Machine]; m != nil {
		delete(m.copies, i.name())
		s.loadChanged(m)
	}
	i.rec.Copy = nil
	i.checking = 0
	s.settled(i)
	s.offers = true
	if i.rec.Removed {
		s.deleteInst(i)
		return
	}
	s.enqueue(i)
	s.touch(i)
}

// copyGone ends a copy that ended without its master saying so: a
// published one counts as a service down.
func (s *State) copyGone(now time.Time, i *inst, reason string) {
	if c := i.rec.Copy; c != nil && c.Phase == store.PhasePublished {
		if over := s.countDown(i.name(), now); over > 0 {
			s.crashLoop(i, now, over, reason)
		}
		s.log.Info("service down", "instance", i.name(), "machine", c.Machine, "reason", reason)
	}
	s.endCopy(i)
}
