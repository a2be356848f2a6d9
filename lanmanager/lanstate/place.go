package lanstate

import (
	"container/heap"
	"fmt"
	"slices"
	"time"

	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// Placement (link protocol lanwire.Placement): needs wait in a queue in
// the order they became placeable, and each goes to the eligible master
// with the fewest copies (ties: the one granted to least recently), found
// through a heap per module of the masters that serve it. A master may
// decline a grant; the need is then not placed on it for DeclineHold.

// DefaultDeclineHold is Config.DeclineHold's default.
const DefaultDeclineHold = 5 * time.Second

// placeHeap orders a module's placing sessions by load, then by when
// they were last granted a need.
type placeHeap struct {
	module string
	s      []*session
}

func (h *placeHeap) Len() int { return len(h.s) }
func (h *placeHeap) Less(a, b int) bool {
	return lessLoaded(h.s[a], h.s[b])
}
func (h *placeHeap) Swap(a, b int) {
	h.s[a], h.s[b] = h.s[b], h.s[a]
	h.s[a].idx[h.module], h.s[b].idx[h.module] = a, b
}
func (h *placeHeap) Push(x any) {
	sess := x.(*session)
	sess.idx[h.module] = len(h.s)
	h.s = append(h.s, sess)
}
func (h *placeHeap) Pop() any {
	n := len(h.s) - 1
	sess := h.s[n]
	h.s[n] = nil
	h.s = h.s[:n]
	delete(sess.idx, h.module)
	return sess
}

func lessLoaded(a, b *session) bool {
	la, lb := len(a.m.copies), len(b.m.copies)
	return la < lb || la == lb && a.lastGrant < b.lastGrant
}

// full says whether a machine takes no more copies.
func (m *machine) full() bool {
	return m.capacity.MaxProcesses > 0 && len(m.copies) >= m.capacity.MaxProcesses
}

// joinPlacement adds a placing session to the heaps of its modules.
func (s *State) joinPlacement(sess *session) {
	if !sess.placement {
		return
	}
	sess.idx = map[string]int{}
	s.forgetDeclines(sess.m)
	for mod := range sess.modules {
		h := s.byModule[mod]
		if h == nil {
			h = &placeHeap{module: mod}
			s.byModule[mod] = h
		}
		heap.Push(h, sess)
	}
}

// leavePlacement takes a session out of the heaps.
func (s *State) leavePlacement(sess *session) {
	for mod, k := range sess.idx {
		h := s.byModule[mod]
		heap.Remove(h, k)
		if h.Len() == 0 {
			delete(s.byModule, mod)
		}
	}
}

// loadChanged keeps the heaps in order after a machine's copies changed.
func (s *State) loadChanged(m *machine) {
	if m.sess == nil {
		return
	}
	for mod, k := range m.sess.idx {
		heap.Fix(s.byModule[mod], k)
	}
}

// place grants waiting needs to eligible masters while there is room,
// one need from each group in turn (queue.go); within a group, in order.
// Needs without an eligible master keep their place. A need with no
// constraint and no declines that finds no master means none of its
// module has room, so the rest of that module's plain needs are skipped
// in this pass.
func (s *State) place(now time.Time) {
	s.blocked = false
	if len(s.byModule) == 0 || len(s.groups) == 0 {
		return
	}
	room := s.room()
	exhausted := map[string]bool{}
	t := max(slices.Index(s.groups, s.turn), 0)
	active := append(slices.Clone(s.groups[t:]), s.groups[:t]...)
	spare := make([]*group, 0, len(active))
	var after *group
	for room > 0 && len(active) > 0 {
		left := spare[:0]
		for k, g := range active {
			if room == 0 {
				left = append(left, active[k:]...)
				break
			}
			if s.placeOne(now, g, exhausted) {
				room--
				after = active[(k+1)%len(active)]
			}
			if g.pos < len(g.q) {
				left = append(left, g)
			}
		}
		active, spare = left, active
	}
	s.blocked = room == 0 && len(active) > 0
	s.dropEmpty()
	if after != nil {
		s.turn = after
	}
}

// placeOne looks at g's needs in order until one is granted; false when
// none of them could be.
func (s *State) placeOne(now time.Time, g *group, exhausted map[string]bool) bool {
	for i := s.next(g); i != nil; i = s.next(g) {
		mod := i.rec.Need.Module
		plain := i.rec.Need.Machine == nil && len(i.declined) == 0
		if now.Before(i.rec.NotBefore) || plain && exhausted[mod] {
			g.keep(i)
			continue
		}
		sess := s.pick(i, now)
		if sess == nil {
			exhausted[mod] = exhausted[mod] || plain
			g.keep(i)
			continue
		}
		i.queued = false
		s.grant(now, sess, i)
		return true
	}
	return false
}

// pick returns the least loaded eligible master for i, or nil.
func (s *State) pick(i *inst, now time.Time) *session {
	if c := i.rec.Need.Machine; c != nil && c.ID != "" {
		m := s.machines[c.ID]
		if m == nil || m.sess == nil || !m.sess.placement || !m.sess.modules[i.rec.Need.Module] || !s.eligible(m.sess, i, now) {
			return nil
		}
		return m.sess
	}
	h := s.byModule[i.rec.Need.Module]
	if h == nil || h.Len() == 0 {
		return nil
	}
	if top := h.s[0]; s.eligible(top, i, now) {
		return top
	}
	var best *session
	for _, sess := range h.s {
		if s.eligible(sess, i, now) && (best == nil || lessLoaded(sess, best)) {
			best = sess
		}
	}
	return best
}

func (s *State) eligible(sess *session, i *inst, now time.Time) bool {
	m := sess.m
	if m.full() || !i.rec.Need.Allows(m.id, m.address) {
		return false
	}
	until, declined := i.declined[m.id]
	return !declined || !until.IsZero() && !now.Before(until)
}

// grant gives a need to a master as a new copy; the grant is stored in
// this batch, before it is sent.
func (s *State) grant(now time.Time, sess *session, i *inst) {
	s.epoch++
	s.epochDirty = true
	s.grants++
	sess.lastGrant = s.grants
	s.setCopy(i, &store.Copy{Machine: sess.m.id, Epoch: s.epoch, Phase: store.PhaseGranted, GrantedAt: now})
	s.log.Debug("need granted", "instance", i.name(), "machine", sess.m.id, "epoch", s.epoch)
	s.send(sess, lanwire.TypeGrant, &lanwire.Grant{Need: i.rec.Need, Epoch: s.epoch})
	if s.cfg.MaxPlacing >= 0 {
		s.placing[i] = s.epoch
	}
	s.offers = true
}

// decline takes a granted copy back from a master that will not run it:
// not a failure, but the need is placed elsewhere, and not on that master
// until DeclineHold has passed.
func (s *State) decline(now time.Time, sess *session, d *lanwire.Decline) {
	i := s.copyOf(sess.m, d.Instance, d.Epoch)
	switch {
	case i == nil:
		s.refuseFrame(sess, lanwire.TypeDecline, fmt.Errorf("decline %s epoch %d: not a copy of this master (%s)", d.Instance, d.Epoch, s.notYours(s.insts[d.Instance], sess.m, d.Epoch)))
		return
	case i.rec.Copy.Phase == store.PhasePublished || i.checking != 0:
		s.refuseFrame(sess, lanwire.TypeDecline, fmt.Errorf("decline %s epoch %d: it was reported spawned; report it down instead", d.Instance, d.Epoch))
		return
	}
	if i.declined == nil {
		i.declined = map[string]time.Time{}
	}
	why := "declined by " + sess.m.id + ": " + d.Reason
	if d.Final {
		// Zero: until the need changes or the master says hello anew.
		i.declined[sess.m.id] = time.Time{}
		s.fail(i, now, why)
	} else {
		i.declined[sess.m.id] = now.Add(s.cfg.DeclineHold)
		i.rec.LastError = why
		s.touch(i)
	}
	s.log.Info("grant declined", "instance", d.Instance, "machine", sess.m.id, "reason", d.Reason, "final", d.Final)
	s.endCopy(i)
}

// forgetDeclines lets a master that says hello anew be placed the needs
// it declined: its modules or configuration may have changed.
func (s *State) forgetDeclines(m *machine) {
	s.eachQueued(func(i *inst) { delete(i.declined, m.id) })
}
