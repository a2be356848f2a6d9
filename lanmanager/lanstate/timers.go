package lanstate

import (
	"container/heap"
	"time"
)

// The instances' timers (grant deadlines, backoffs, decline holds) are
// kept in a min-heap, so that Next and Tick cost the timers due, not the
// number of instances. An instance is pushed again whenever its deadline
// may have changed (touch); entries that no longer match the instance's
// deadline are dropped when they reach the top.

type timer struct {
	at time.Time
	i  *inst
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(a, b int) bool { return h[a].at.Before(h[b].at) }
func (h timerHeap) Swap(a, b int)      { h[a], h[b] = h[b], h[a] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old) - 1
	t := old[n]
	old[n] = timer{}
	*h = old[:n]
	return t
}

// deadline is when Tick next has something to do for i.
func (s *State) deadline(i *inst) (t time.Time, ok bool) {
	earliest := func(d time.Time) {
		if !ok || d.Before(t) {
			t, ok = d, true
		}
	}
	if d, has := s.grantDeadline(i); has {
		earliest(d)
	}
	if i.rec.Copy == nil && !i.rec.Removed && !i.rec.NotBefore.IsZero() && !i.rec.NotBefore.Equal(i.waited) {
		earliest(i.rec.NotBefore)
	}
	for _, until := range i.declined {
		if !until.IsZero() {
			earliest(until)
		}
	}
	return t, ok
}

// schedule pushes i's deadline unless it is already in the heap.
func (s *State) schedule(i *inst) {
	t, ok := s.deadline(i)
	if !ok || i.scheduled && t.Equal(i.sched) {
		return
	}
	i.sched, i.scheduled = t, true
	heap.Push(&s.timers, timer{at: t, i: i})
}

// current says whether a heap entry still is its instance's deadline.
func (s *State) current(e timer) bool {
	if s.insts[e.i.name()] != e.i {
		return false
	}
	t, ok := s.deadline(e.i)
	return ok && t.Equal(e.at)
}

// nextTimer drops stale entries and returns the first live one.
func (s *State) nextTimer() (time.Time, bool) {
	for len(s.timers) > 0 {
		e := s.timers[0]
		if s.current(e) {
			return e.at, true
		}
		heap.Pop(&s.timers)
		if e.i.scheduled && e.i.sched.Equal(e.at) {
			e.i.scheduled = false
		}
	}
	return time.Time{}, false
}

// dueTimers pops the instances whose deadline is at or before now.
func (s *State) dueTimers(now time.Time) []*inst {
	var due []*inst
	for {
		at, ok := s.nextTimer()
		if !ok || now.Before(at) {
			return due
		}
		e := heap.Pop(&s.timers).(timer)
		e.i.scheduled = false
		due = append(due, e.i)
	}
}

// tickInst does what is due at now for one instance: a grant that
// expired is stopped, a backoff or a decline hold that ended lets the
// need be placed.
func (s *State) tickInst(i *inst, now time.Time) {
	if d, ok := s.grantDeadline(i); ok && !now.Before(d) {
		c := i.rec.Copy
		reason := "grant to " + c.Machine + " expired: no spawned within " + i.rec.Need.Timeout().String()
		s.fail(i, now, reason)
		s.stopCopy(i, reason)
	}
	if !i.rec.NotBefore.IsZero() && !now.Before(i.rec.NotBefore) && i.rec.Copy == nil && !i.rec.NotBefore.Equal(i.waited) {
		// Seen once: no timer for it again.
		i.waited = i.rec.NotBefore
		s.offers = true
	}
	for id, until := range i.declined {
		if !until.IsZero() && !now.Before(until) {
			delete(i.declined, id)
			s.offers = true
		}
	}
	s.schedule(i)
}
