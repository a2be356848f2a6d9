package lanstate

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// AddNeeds adds needs, all or none: one invalid or conflicting need (or
// one named twice) refuses the batch with an error wrapping
// adminapi.ErrInvalid or adminapi.ErrConflict. A removed need whose copy
// is still stopping is added again, and offered once that copy is gone.
func (s *State) AddNeeds(now time.Time, needs []lanwire.Need, origin string) error {
	seen := make(map[string]bool, len(needs))
	for _, n := range needs {
		if err := n.Validate(); err != nil {
			return fmt.Errorf("%w: %w", adminapi.ErrInvalid, err)
		}
		if seen[n.Instance] {
			return fmt.Errorf("%w: need %s given twice", adminapi.ErrInvalid, n.Instance)
		}
		seen[n.Instance] = true
		if i := s.insts[n.Instance]; i != nil && !i.rec.Removed {
			if c := i.rec.Copy; c != nil && c.Phase == store.PhasePublished {
				return fmt.Errorf("%w: %s already runs as a service on machine %s", adminapi.ErrConflict, n.Instance, c.Machine)
			}
			return fmt.Errorf("%w: need %s already exists", adminapi.ErrConflict, n.Instance)
		}
	}
	s.newGroup()
	defer s.endGroup()
	for _, n := range needs {
		s.putNeed(now, n, origin)
		s.log.Debug("need added", "instance", n.Instance, "module", n.Module)
	}
	switch len(needs) {
	case 0:
	case 1:
		s.log.Info("need added", "instance", needs[0].Instance, "module", needs[0].Module)
	default:
		s.log.Info("needs added", "count", len(needs), "first", needs[0].Instance, "last", needs[len(needs)-1].Instance)
	}
	return nil
}

// putNeed sets an instance's need, keeping a copy that is still stopping.
func (s *State) putNeed(now time.Time, n lanwire.Need, origin string) {
	if i := s.insts[n.Instance]; i != nil {
		i.rec.Need, i.rec.Removed, i.rec.Origin, i.rec.CreatedAt = n, false, origin, now
		i.rec.Attempts, i.rec.NotBefore, i.rec.LastError = 0, time.Time{}, ""
		i.declined = nil
		s.touch(i)
		s.enqueue(i)
		s.offers = true
		return
	}
	i := &inst{rec: store.Instance{Need: n, Origin: origin, CreatedAt: now}}
	s.addInst(i)
	s.enqueue(i)
	s.offers = true
}

// RemoveNeed removes a need. Its copy, if any, is told to stop; the
// instance is forgotten once that copy is gone, and is not offered
// meanwhile. Unknown instances wrap adminapi.ErrNotFound.
func (s *State) RemoveNeed(instance string) error {
	i := s.insts[instance]
	if i == nil || i.rec.Removed {
		return fmt.Errorf("%w: no need or service %q", adminapi.ErrNotFound, instance)
	}
	s.remove(i, "need removed")
	return nil
}

func (s *State) remove(i *inst, why string) {
	// A need added again later starts with a clean crash record.
	delete(s.downs, i.name())
	s.log.Info("need removed", "instance", i.name(), "why", why)
	if i.rec.Copy == nil {
		s.deleteInst(i)
		return
	}
	i.rec.Removed = true
	s.stopCopy(i, why)
	s.touch(i)
	s.offers = true
}

// mergeFiles merges the needs files declaratively: a file need not stored
// is added; a stored file need with no copy whose definition changed is
// updated; needs that came from a file that no longer lists them are
// removed. Needs added through the API are never touched by files.
func (s *State) mergeFiles(files []FileNeed, now time.Time) {
	inFiles := map[string]bool{}
	for _, f := range files {
		inFiles[f.Need.Instance] = true
	}
	for _, i := range slices.Clone(s.sorted) {
		if strings.HasPrefix(i.rec.Origin, "file:") && !inFiles[i.name()] && !i.rec.Removed {
			s.remove(i, "no longer in any needs file")
		}
	}
	for _, f := range files {
		i := s.insts[f.Need.Instance]
		switch {
		case i == nil || i.rec.Removed:
			s.putNeed(now, f.Need, f.Origin)
		case !strings.HasPrefix(i.rec.Origin, "file:"), i.rec.Copy != nil:
		case !reflect.DeepEqual(i.rec.Need, f.Need) || i.rec.Origin != f.Origin:
			s.putNeed(now, f.Need, f.Origin)
		}
	}
}

// offerable says why sess may not claim i now ("" if it may).
func (s *State) offerable(i *inst, sess *session, now time.Time) string {
	n := i.rec.Need
	switch {
	case now.Before(i.rec.NotBefore):
		return fmt.Sprintf("backing off until %s", i.rec.NotBefore.UTC().Format(time.RFC3339Nano))
	case !sess.modules[n.Module]:
		return fmt.Sprintf("module %q is not served by this master", n.Module)
	case !n.Allows(sess.m.id, sess.m.address):
		return "machine constraint does not allow this master"
	}
	return ""
}

// sendOffers sends every connected master its needs list, the first
// OfferWindow needs it may claim, when it changed since its last one.
func (s *State) sendOffers(now time.Time) {
	for _, sess := range s.sessions {
		if sess.placement {
			continue
		}
		list := []lanwire.Need{}
		if !sess.m.capacity.Full() {
			for _, i := range s.sorted {
				if len(list) == s.cfg.OfferWindow {
					break
				}
				if i.rec.Copy == nil && !i.rec.Removed && s.offerable(i, sess, now) == "" {
					list = append(list, i.rec.Need)
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
			s.send(sess, lanwire.TypeNeeds, &lanwire.Needs{Needs: list})
		}
	}
}
