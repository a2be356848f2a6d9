package lanstate

import (
	"fmt"

	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// Tokens and revocations ride in the state's batch, so that they are
// committed in order with everything else (and, on etcd, under the
// leader's guard). The LAN manager's request handlers check them from
// their own copy, replaced after each commit that changes them.

// PutToken stores a token's record, or deletes it when t is nil.
func (s *State) PutToken(id string, t *store.Token) {
	if s.fx.Store.Tokens == nil {
		s.fx.Store.Tokens = map[string]*store.Token{}
	}
	s.fx.Store.Tokens[id] = t
}

// Revoke cuts a machine off for good: its hello is refused from now on
// and a live link is closed. Its copies then end as a lost master's do:
// the master cannot renew its lease, fences them, and they move once
// the lease and margin have passed.
func (s *State) Revoke(r store.Revocation) {
	if s.revoked == nil {
		s.revoked = map[string]bool{}
	}
	s.revoked[r.Machine] = true
	if s.fx.Store.Revoked == nil {
		s.fx.Store.Revoked = map[string]*store.Revocation{}
	}
	s.fx.Store.Revoked[r.Machine] = &r
	m := s.machines[r.Machine]
	s.log.Warn("machine revoked", "machine", r.Machine, "reason", r.Reason, "linked", m != nil && m.sess != nil)
	if m == nil || m.sess == nil {
		return
	}
	// The link's end is reported as any other's, with the last time the
	// master was heard (and so its lease renewed) on it.
	sid := m.sess.id
	s.fx.Sends = append(s.fx.Sends, Send{Session: sid, Type: lanwire.TypeError, Payload: &lanwire.Error{Message: "this machine was revoked: " + r.Reason}})
	s.fx.Closes = append(s.fx.Closes, Close{Session: sid, Code: lanwire.CloseRefused, Reason: "machine revoked"})
}

// refuseRevoked refuses the hello of a revoked machine.
func (s *State) refuseRevoked(sid SessionID, h *lanwire.Hello) bool {
	if !s.revoked[h.MachineID] {
		return false
	}
	s.log.Warn("refused a revoked machine's hello", "machine", h.MachineID, "address", h.Address)
	s.fx.Sends = append(s.fx.Sends, Send{Session: sid, Type: lanwire.TypeError, Payload: &lanwire.Error{Ref: lanwire.TypeHello, Message: fmt.Sprintf("machine %q was revoked", h.MachineID)}})
	s.fx.Closes = append(s.fx.Closes, Close{Session: sid, Code: lanwire.CloseRefused, Reason: "machine revoked"})
	return true
}
