package lanstate

// The placement queue is fair between requests, and placement is
// windowed. Each admin request (one AddNeeds) queues its needs in a group
// of its own; needs queued otherwise (a copy that ended, a needs file, a
// restart) share one background group. A placement pass takes needs from
// the groups in turn, so a single need added during a burst of 100,000
// is placed in the next pass, not after the burst. At most MaxPlacing
// copies may be granted and not yet published at once (copies on masters
// that are away do not count): the rest wait here, where waiting costs
// nothing, instead of as frames and port checks queued behind each
// other, where every need waits for all those ahead of it.

// DefaultMaxPlacing is Config.MaxPlacing's default.
const DefaultMaxPlacing = 256

// group is one request's needs waiting for placement, oldest first.
type group struct {
	q []*inst
	// During a pass: the next need to look at, and the needs looked at
	// that keep their place.
	pos  int
	kept []*inst
}

// enqueue makes an instance wait for placement, once, in the current
// request's group or the background one.
func (s *State) enqueue(i *inst) {
	if i.queued {
		return
	}
	i.queued = true
	g := s.into
	if g == nil {
		if s.background == nil {
			s.background = &group{}
			s.groups = append(s.groups, s.background)
		}
		g = s.background
	}
	g.q = append(g.q, i)
}

// newGroup starts the group of one request; endGroup ends it.
func (s *State) newGroup() {
	s.into = &group{}
	s.groups = append(s.groups, s.into)
}

func (s *State) endGroup() { s.into = nil }

// room says how many more copies may be granted now: MaxPlacing less the
// granted ones not yet published on connected masters.
func (s *State) room() int {
	if s.cfg.MaxPlacing < 0 {
		return int(^uint(0) >> 1)
	}
	return max(s.cfg.MaxPlacing-len(s.placing), 0)
}

// settled takes a copy out of the window: it was published, it is
// stopping or gone, or its master went away.
func (s *State) settled(i *inst) {
	if _, ok := s.placing[i]; ok {
		delete(s.placing, i)
		s.offers = true
	}
}

// next returns the next need of g to look at in this pass, dropping the
// ones that no longer wait; nil when g has no more.
func (s *State) next(g *group) *inst {
	for g.pos < len(g.q) {
		i := g.q[g.pos]
		g.pos++
		if i.rec.Copy != nil || i.rec.Removed || s.insts[i.name()] != i {
			i.queued = false
			continue
		}
		return i
	}
	return nil
}

// keep leaves i in its place in g.
func (g *group) keep(i *inst) { g.kept = append(g.kept, i) }

// settle ends a pass over g: the needs kept go back in front of the ones
// not looked at, in order. It says whether g still has needs.
func (g *group) settle() bool {
	start := g.pos - len(g.kept)
	copy(g.q[start:g.pos], g.kept)
	clear(g.q[:start])
	g.q = g.q[start:]
	g.pos, g.kept = 0, g.kept[:0]
	if len(g.q) == 0 {
		g.q = nil
		return false
	}
	return true
}

// dropEmpty forgets the groups a pass emptied, keeping the turn order.
func (s *State) dropEmpty() {
	kept := s.groups[:0]
	for _, g := range s.groups {
		if g.settle() || g == s.into {
			kept = append(kept, g)
		} else if g == s.background {
			s.background = nil
		}
	}
	clear(s.groups[len(kept):])
	s.groups = kept
}

// eachQueued calls f for every need waiting for placement.
func (s *State) eachQueued(f func(*inst)) {
	for _, g := range s.groups {
		for _, i := range g.q {
			f(i)
		}
	}
}
