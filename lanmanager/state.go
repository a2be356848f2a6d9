package lanmanager

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// needState is a need in memory: the stored part plus the grant, which is
// deliberately not stored (a grant is only valid for a live session).
type needState struct {
	st         store.Need
	grantee    *session
	grantGen   uint64
	grantTimer *time.Timer
	// checking is set while the port check of a spawned report runs.
	checking bool
	// expiredFrom is the machine whose grant timed out, so its late
	// spawned report is answered with rejected rather than an error.
	expiredFrom  string
	backoffTimer *time.Timer
}

func (ns *needState) stopTimers() {
	if ns.grantTimer != nil {
		ns.grantTimer.Stop()
		ns.grantTimer = nil
	}
	if ns.backoffTimer != nil {
		ns.backoffTimer.Stop()
		ns.backoffTimer = nil
	}
}

// machine is a master known by id, connected or within its grace period.
type machine struct {
	id         string
	address    string
	capacity   lanwire.Capacity
	sess       *session
	lastSeen   time.Time
	graceTimer *time.Timer
	graceGen   uint64
}

type watcher struct {
	module string
	ch     chan adminapi.ServiceEvent
}

func (s *Server) machineLocked(id string) *machine {
	m, ok := s.machines[id]
	if !ok {
		m = &machine{id: id}
		s.machines[id] = m
	}
	return m
}

// startTimersLocked arms what a restart needs: grace for every machine
// known from stored services, and re-offers when backoffs end.
func (s *Server) startTimersLocked() {
	for _, m := range s.machines {
		if m.sess == nil {
			s.startGraceLocked(m)
		}
	}
	for _, ns := range s.needs {
		s.armBackoffLocked(ns)
	}
}

func (s *Server) startGraceLocked(m *machine) {
	if m.graceTimer != nil {
		m.graceTimer.Stop()
	}
	m.graceGen++
	gen, id := m.graceGen, m.id
	m.graceTimer = time.AfterFunc(s.cfg.Grace, func() { s.graceExpired(id, gen) })
}

func (s *Server) graceExpired(id string, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.machines[id]
	if s.closed || m == nil || m.graceGen != gen || m.sess != nil {
		return
	}
	m.graceTimer = nil
	for _, inst := range s.serviceInstancesLocked(id) {
		s.log.Info("service down: its master did not come back within grace", "instance", inst, "machine", id)
		s.serviceDownLocked(inst, "master lost")
	}
	delete(s.machines, id)
	s.reofferLocked()
}

func (s *Server) serviceInstancesLocked(machineID string) []string {
	var out []string
	for inst, sv := range s.svcs {
		if sv.Record.MachineID == machineID {
			out = append(out, inst)
		}
	}
	sort.Strings(out)
	return out
}

// serviceDownLocked removes a service and recreates its need: at once,
// unless the service keeps going down (a crash loop), then after a backoff.
func (s *Server) serviceDownLocked(inst, reason string) {
	sv := s.svcs[inst]
	if sv == nil {
		return
	}
	now := time.Now()
	n := store.Need{Need: sv.Need, CreatedAt: now, Origin: sv.Origin}
	if over := s.countDownLocked(inst, now); over > 0 {
		n.Attempts = over
		n.NotBefore = now.Add(s.backoff(over))
		n.LastError = fmt.Sprintf("crash loop: down %d times within %v (last: %s)", s.cfg.CrashLoopLimit+over, s.cfg.CrashLoopWindow, reason)
	}
	if err := s.store.Unpublish(inst, n); err != nil {
		// Memory stays as it was so it keeps matching the store.
		s.log.Error("cannot unpublish service", "instance", inst, "error", err)
		return
	}
	delete(s.svcs, inst)
	ns := &needState{st: n}
	s.setNeedLocked(ns)
	s.emitLocked(adminapi.EventDown, sv.Record)
	if n.Attempts > 0 {
		s.armBackoffLocked(ns)
		s.log.Warn("service down in a crash loop, need backs off", "instance", inst, "until", n.NotBefore, "reason", reason)
		return
	}
	s.log.Info("service down, need recreated", "instance", inst, "reason", reason)
}

// countDownLocked records a down of inst and returns by how many downs the
// crash-loop window is over its limit (0: not in a crash loop).
func (s *Server) countDownLocked(inst string, now time.Time) int {
	if s.cfg.CrashLoopLimit < 0 {
		return 0
	}
	recent := s.downs[inst][:0]
	for _, t := range s.downs[inst] {
		if now.Sub(t) < s.cfg.CrashLoopWindow {
			recent = append(recent, t)
		}
	}
	recent = append(recent, now)
	s.downs[inst] = recent
	return max(len(recent)-s.cfg.CrashLoopLimit, 0)
}

func (s *Server) emitLocked(typ string, rec lanwire.ServiceRecord) {
	ev := adminapi.ServiceEvent{Type: typ, Service: rec}
	for w := range s.watchers {
		if w.module != "" && w.module != rec.Module {
			continue
		}
		select {
		case w.ch <- ev:
		default:
			// A watcher that cannot keep up is cut off rather than
			// allowed to stall the state machine; it sees the stream end.
			close(w.ch)
			delete(s.watchers, w)
		}
	}
}

func (s *Server) backoff(attempts int) time.Duration {
	d := s.cfg.RetryBackoffInitial
	for i := 1; i < attempts && d < s.cfg.RetryBackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.RetryBackoffMax)
	// Jitter keeps masters from retrying a crashing need in lockstep.
	return d/2 + rand.N(d/2+1)
}

// failLocked drops the grant and puts the need back with backoff.
func (s *Server) failLocked(ns *needState, reason string) {
	s.revokeLocked(ns)
	st := ns.st
	st.Attempts++
	st.NotBefore = time.Now().Add(s.backoff(st.Attempts))
	st.LastError = reason
	if err := s.store.PutNeed(st); err != nil {
		s.log.Error("cannot store need", "instance", st.Need.Instance, "error", err)
	}
	ns.st = st
	s.armBackoffLocked(ns)
	s.log.Warn("need failed, backing off", "instance", st.Need.Instance, "attempts", st.Attempts, "until", st.NotBefore, "reason", reason)
}

func (s *Server) armBackoffLocked(ns *needState) {
	if ns.backoffTimer != nil {
		ns.backoffTimer.Stop()
		ns.backoffTimer = nil
	}
	wait := time.Until(ns.st.NotBefore)
	if wait <= 0 {
		return
	}
	ns.backoffTimer = time.AfterFunc(wait, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed {
			s.reofferLocked()
		}
	})
}

// revokeLocked makes a granted need pending again; a running port check
// sees the generation change and drops its result.
func (s *Server) revokeLocked(ns *needState) {
	ns.grantee = nil
	ns.grantGen++
	ns.checking = false
	if ns.grantTimer != nil {
		ns.grantTimer.Stop()
		ns.grantTimer = nil
	}
}

func (s *Server) grantLocked(ns *needState, sess *session, withTimeout bool) uint64 {
	s.revokeLocked(ns)
	ns.grantee = sess
	ns.expiredFrom = ""
	gen, inst := ns.grantGen, ns.st.Need.Instance
	if withTimeout {
		ns.grantTimer = time.AfterFunc(ns.st.Need.Timeout(), func() { s.grantExpired(inst, gen) })
	}
	return gen
}

func (s *Server) grantExpired(inst string, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := s.needs[inst]
	if s.closed || ns == nil || ns.grantGen != gen || ns.grantee == nil || ns.checking {
		return
	}
	from := ns.grantee.machineID
	s.failLocked(ns, fmt.Sprintf("grant to %s expired: no spawned within %s", from, ns.st.Need.Timeout()))
	ns.expiredFrom = from
	s.reofferLocked()
}

func (s *Server) setNeedLocked(ns *needState) {
	inst := ns.st.Need.Instance
	s.needs[inst] = ns
	if s.sorted == nil {
		return
	}
	// Kept in order rather than rebuilt: a need comes back at every
	// service down.
	if i, found := slices.BinarySearchFunc(s.sorted, inst, byInstance); found {
		s.sorted[i] = ns
	} else {
		s.sorted = slices.Insert(s.sorted, i, ns)
	}
}

func (s *Server) dropNeedLocked(instance string) {
	delete(s.needs, instance)
	// Removed in place rather than rebuilt: a need goes at every publish.
	if i, found := slices.BinarySearchFunc(s.sorted, instance, byInstance); found {
		s.sorted = slices.Delete(s.sorted, i, i+1)
	}
}

func byInstance(ns *needState, instance string) int {
	return strings.Compare(ns.st.Need.Instance, instance)
}

// sortedNeedsLocked returns the needs by instance; callers must not keep
// or change the slice.
func (s *Server) sortedNeedsLocked() []*needState {
	if s.sorted != nil || len(s.needs) == 0 {
		return s.sorted
	}
	// Built once; setNeedLocked and dropNeedLocked keep it in order.
	out := make([]*needState, 0, len(s.needs))
	for _, ns := range s.needs {
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b *needState) int { return strings.Compare(a.st.Need.Instance, b.st.Need.Instance) })
	s.sorted = out
	return out
}

// offerable says whether sess may claim ns now.
func (s *Server) offerable(ns *needState, sess *session, now time.Time) string {
	n := ns.st.Need
	switch {
	case ns.grantee != nil && ns.grantee.live:
		return "already granted"
	case now.Before(ns.st.NotBefore):
		return fmt.Sprintf("backing off until %s", ns.st.NotBefore.UTC().Format(time.RFC3339Nano))
	case !sess.modules[n.Module]:
		return fmt.Sprintf("module %q is not served by this master", n.Module)
	case !n.Allows(sess.machineID, sess.address):
		return "machine constraint does not allow this master"
	}
	return ""
}

// reofferLocked asks for every live master to get its current needs list.
// The lists go out from reofferLoop: a burst of changes (hundreds of needs
// added or granted in a row) then costs one list per master instead of one
// per change, which made starting n services cost n² need entries.
func (s *Server) reofferLocked() {
	select {
	case s.reoffer <- struct{}{}:
	default:
	}
}

// reofferLoop sends the needs lists reofferLocked asked for.
func (s *Server) reofferLoop(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reoffer:
		}
		s.mu.Lock()
		if !s.closed {
			s.sendOffersLocked()
		}
		s.mu.Unlock()
	}
}

// sendOffersLocked sends every live master its current needs list, the
// first OfferWindow needs it may claim, when it changed since the last one
// it got.
func (s *Server) sendOffersLocked() {
	sorted := s.sortedNeedsLocked()
	now := time.Now()
	for _, m := range s.machines {
		sess := m.sess
		if sess == nil {
			continue
		}
		list := []lanwire.Need{}
		if !m.capacity.Full() {
			for _, ns := range sorted {
				if len(list) == s.cfg.OfferWindow {
					break
				}
				if s.offerable(ns, sess, now) == "" {
					list = append(list, ns.st.Need)
				}
			}
		}
		var b strings.Builder
		for _, n := range list {
			b.WriteString(n.Instance)
			b.WriteByte(0)
		}
		if sig := b.String(); sig != sess.lastOffer || !sess.offered {
			sess.lastOffer, sess.offered = sig, true
			s.sendLocked(sess, lanwire.TypeNeeds, &lanwire.Needs{Needs: list})
		}
	}
}

func (s *Server) sendLocked(sess *session, typ string, payload any) {
	b, err := lanwire.Encode(typ, payload)
	if err != nil {
		s.log.Error("cannot encode frame", "type", typ, "error", err)
		return
	}
	sess.send(b, s.log)
}

func (s *Server) sendError(sess *session, ref string, err error) {
	s.log.Warn("refused frame from master", "machine", sess.machineID, "ref", ref, "error", err)
	s.sendLocked(sess, lanwire.TypeError, &lanwire.Error{Ref: ref, Message: err.Error()})
}

func (s *Server) needStatusLocked(ns *needState) adminapi.NeedStatus {
	st := adminapi.NeedStatus{
		Need: ns.st.Need, State: adminapi.StatePending, Attempts: ns.st.Attempts,
		NotBefore: ns.st.NotBefore, LastError: ns.st.LastError, Origin: ns.st.Origin,
	}
	if ns.grantee != nil {
		st.State, st.Machine = adminapi.StateGranted, ns.grantee.machineID
	}
	return st
}
