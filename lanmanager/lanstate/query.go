package lanstate

import (
	"slices"
	"strings"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// Needs lists every instance with where it stands, sorted by instance.
func (s *State) Needs() []adminapi.NeedStatus {
	out := make([]adminapi.NeedStatus, 0, len(s.sorted))
	for _, i := range s.sorted {
		out = append(out, s.status(i))
	}
	return out
}

// NeedStatus returns one instance's status.
func (s *State) NeedStatus(instance string) (adminapi.NeedStatus, bool) {
	i := s.insts[instance]
	if i == nil {
		return adminapi.NeedStatus{}, false
	}
	return s.status(i), true
}

func (s *State) status(i *inst) adminapi.NeedStatus {
	st := adminapi.NeedStatus{
		Need: i.rec.Need, State: adminapi.StatePending, Attempts: i.rec.Attempts,
		NotBefore: i.rec.NotBefore, LastError: i.rec.LastError, Origin: i.rec.Origin, Removed: i.rec.Removed,
	}
	if c := i.rec.Copy; c != nil {
		st.Machine, st.Epoch = c.Machine, c.Epoch
		switch c.Phase {
		case store.PhasePublished:
			st.State = adminapi.StateSatisfied
		case store.PhaseStopping:
			st.State = adminapi.StateStopping
		default:
			st.State = adminapi.StateGranted
		}
	}
	return st
}

// ServiceFilter selects services; empty fields match everything.
type ServiceFilter struct {
	Module   string
	Instance string
}

// Services lists published services matching f, sorted by instance.
func (s *State) Services(f ServiceFilter) []lanwire.ServiceRecord {
	out := []lanwire.ServiceRecord{}
	if f.Instance != "" {
		if rec, ok := s.Service(f.Instance); ok && (f.Module == "" || f.Module == rec.Module) {
			out = append(out, rec)
		}
		return out
	}
	for _, i := range s.sorted {
		if c := i.rec.Copy; c != nil && c.Service != nil && (f.Module == "" || f.Module == c.Service.Module) {
			out = append(out, *c.Service)
		}
	}
	return out
}

// Service returns one published service.
func (s *State) Service(instance string) (lanwire.ServiceRecord, bool) {
	if i := s.insts[instance]; i != nil && i.rec.Copy != nil && i.rec.Copy.Service != nil {
		return *i.rec.Copy.Service, true
	}
	return lanwire.ServiceRecord{}, false
}

// Machines lists known masters: connected, or away with copies.
func (s *State) Machines() []adminapi.MachineInfo {
	out := make([]adminapi.MachineInfo, 0, len(s.machines))
	for _, m := range s.machines {
		n := 0
		for _, i := range m.copies {
			if i.rec.Copy.Phase == store.PhasePublished {
				n++
			}
		}
		info := adminapi.MachineInfo{
			ID: m.id, Identity: short(m.identity), Address: m.address, Connected: m.sess != nil,
			Capacity: m.capacity, Services: n, Copies: len(m.copies), LastSeen: m.lastSeen,
		}
		if m.sess == nil {
			info.CopiesEndAt = m.endsAt
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b adminapi.MachineInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}
