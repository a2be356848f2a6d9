package lanmanager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

const maxBody = 1 << 20

// watchQueue bounds the events buffered for one watch stream.
const watchQueue = 1024

// ServiceFilter selects services; empty fields match everything.
type ServiceFilter struct {
	Module   string
	Instance string
}

// AddNeed adds a need (origin "api"). Errors wrap adminapi.ErrInvalid or
// adminapi.ErrConflict.
func (s *Server) AddNeed(n lanwire.Need) error { return s.AddNeeds([]lanwire.Need{n}) }

// AddNeeds adds several needs at once, all or none: one invalid or
// conflicting need (or one named twice) refuses the whole batch, with the
// same errors as AddNeed. The batch is stored in one transaction and
// offered to the masters together.
func (s *Server) AddNeeds(needs []lanwire.Need) error {
	seen := make(map[string]bool, len(needs))
	for _, n := range needs {
		if err := n.Validate(); err != nil {
			return fmt.Errorf("%w: %w", adminapi.ErrInvalid, err)
		}
		if seen[n.Instance] {
			return fmt.Errorf("%w: need %s given twice", adminapi.ErrInvalid, n.Instance)
		}
		seen[n.Instance] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range needs {
		if _, ok := s.needs[n.Instance]; ok {
			return fmt.Errorf("%w: need %s already exists", adminapi.ErrConflict, n.Instance)
		}
		if sv, ok := s.svcs[n.Instance]; ok {
			return fmt.Errorf("%w: %s already runs as a service on machine %s", adminapi.ErrConflict, n.Instance, sv.Record.MachineID)
		}
	}
	now := time.Now()
	sts := make([]store.Need, len(needs))
	for i, n := range needs {
		sts[i] = store.Need{Need: n, CreatedAt: now, Origin: "api"}
	}
	if err := s.store.PutNeeds(sts); err != nil {
		return err
	}
	for _, st := range sts {
		s.setNeedLocked(&needState{st: st})
		s.log.Info("need added", "instance", st.Need.Instance, "module", st.Need.Module)
	}
	if !s.closed {
		s.reofferLocked()
	}
	return nil
}

// RemoveNeed removes a need; if a service runs for it, its master is told
// to stop it and the record is removed. Unknown instances wrap
// adminapi.ErrNotFound.
func (s *Server) RemoveNeed(instance string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A need added again later starts with a clean crash record.
	delete(s.downs, instance)
	if ns, ok := s.needs[instance]; ok {
		if err := s.store.DeleteNeed(instance); err != nil {
			return err
		}
		if g := ns.grantee; g != nil && g.live {
			s.sendLocked(g, lanwire.TypeStop, &lanwire.Stop{Instance: instance, Reason: "need removed"})
		}
		s.revokeLocked(ns)
		ns.stopTimers()
		s.dropNeedLocked(instance)
		s.log.Info("need removed", "instance", instance)
		if !s.closed {
			s.reofferLocked()
		}
		return nil
	}
	if sv, ok := s.svcs[instance]; ok {
		if err := s.store.DeleteService(instance); err != nil {
			return err
		}
		delete(s.svcs, instance)
		if m := s.machines[sv.Record.MachineID]; m != nil && m.sess != nil {
			s.sendLocked(m.sess, lanwire.TypeStop, &lanwire.Stop{Instance: instance, Reason: "need removed"})
		}
		s.emitLocked(adminapi.EventDown, sv.Record)
		s.log.Info("need removed, service stopped", "instance", instance, "machine", sv.Record.MachineID)
		return nil
	}
	return fmt.Errorf("%w: no need or service %q", adminapi.ErrNotFound, instance)
}

// Needs lists pending and granted needs and the satisfied ones (services),
// sorted by instance.
func (s *Server) Needs() []adminapi.NeedStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]adminapi.NeedStatus, 0, len(s.needs)+len(s.svcs))
	for _, ns := range s.needs {
		out = append(out, s.needStatusLocked(ns))
	}
	for _, sv := range s.svcs {
		out = append(out, adminapi.NeedStatus{Need: sv.Need, State: adminapi.StateSatisfied, Machine: sv.Record.MachineID, Origin: sv.Origin})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Need.Instance < out[j].Need.Instance })
	return out
}

// Services lists published services matching f, sorted by instance.
func (s *Server) Services(f ServiceFilter) []lanwire.ServiceRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.servicesLocked(f)
}

func (s *Server) servicesLocked(f ServiceFilter) []lanwire.ServiceRecord {
	out := []lanwire.ServiceRecord{}
	for _, sv := range s.svcs {
		if (f.Module == "" || f.Module == sv.Record.Module) && (f.Instance == "" || f.Instance == sv.Record.Instance) {
			out = append(out, sv.Record)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out
}

// Service returns one published service or an error wrapping
// adminapi.ErrNotFound.
func (s *Server) Service(instance string) (lanwire.ServiceRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.svcs[instance]
	if !ok {
		return lanwire.ServiceRecord{}, fmt.Errorf("%w: no service %q", adminapi.ErrNotFound, instance)
	}
	return sv.Record, nil
}

// Machines lists known masters (connected, or within grace), sorted by id.
func (s *Server) Machines() []adminapi.MachineInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	count := map[string]int{}
	for _, sv := range s.svcs {
		count[sv.Record.MachineID]++
	}
	out := make([]adminapi.MachineInfo, 0, len(s.machines))
	for _, m := range s.machines {
		out = append(out, adminapi.MachineInfo{
			ID: m.id, Address: m.address, Connected: m.sess != nil, Capacity: m.capacity,
			Services: count[m.id], LastSeen: m.lastSeen,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Watch subscribes to service events for module ("" for all). It returns
// the current services, a channel of later events, and a cancel func. The
// channel is closed when the watcher falls behind or the server stops.
func (s *Server) Watch(module string) ([]lanwire.ServiceRecord, <-chan adminapi.ServiceEvent, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &watcher{module: module, ch: make(chan adminapi.ServiceEvent, watchQueue)}
	current := s.servicesLocked(ServiceFilter{Module: module})
	if s.closed {
		close(w.ch)
	} else {
		s.watchers[w] = struct{}{}
	}
	return current, w.ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.watchers, w)
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET "+lanwire.Path, s.handleLink)
	mux.HandleFunc("GET /v1/needs", s.auth(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Needs())
	}))
	mux.HandleFunc("POST /v1/needs", s.auth(s.handleAddNeed))
	mux.HandleFunc("DELETE /v1/needs/{instance}", s.auth(func(w http.ResponseWriter, r *http.Request) {
		if err := s.RemoveNeed(r.PathValue("instance")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("GET /v1/services", s.auth(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		writeJSON(w, http.StatusOK, s.Services(ServiceFilter{Module: q.Get("module"), Instance: q.Get("instance")}))
	}))
	mux.HandleFunc("GET /v1/services/{instance}", s.auth(func(w http.ResponseWriter, r *http.Request) {
		rec, err := s.Service(r.PathValue("instance"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rec)
	}))
	mux.HandleFunc("GET /v1/services/watch", s.auth(s.handleWatch))
	mux.HandleFunc("GET /v1/machines", s.auth(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Machines())
	}))
	return mux
}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		h(w, r)
	}
}

func (s *Server) handleAddNeed(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxBody))
			return
		}
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '[' {
		s.handleAddNeeds(w, body)
		return
	}
	n, err := lanwire.DecodeNeed(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.AddNeed(n); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.addedStatus(n))
}

// handleAddNeeds adds a JSON array of needs, all or none.
func (s *Server) handleAddNeeds(w http.ResponseWriter, body []byte) {
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		writeError(w, http.StatusBadRequest, "needs array: "+err.Error())
		return
	}
	if len(raws) == 0 {
		writeError(w, http.StatusBadRequest, "needs array is empty")
		return
	}
	needs := make([]lanwire.Need, len(raws))
	for i, raw := range raws {
		n, err := lanwire.DecodeNeed(raw)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("need %d: %v", i, err))
			return
		}
		needs[i] = n
	}
	if err := s.AddNeeds(needs); err != nil {
		writeErr(w, err)
		return
	}
	out := make([]adminapi.NeedStatus, len(needs))
	for i, n := range needs {
		out[i] = s.addedStatus(n)
	}
	writeJSON(w, http.StatusCreated, out)
}

// addedStatus is what the answer to adding n shows: its status now, or
// satisfied when it was granted and published meanwhile.
func (s *Server) addedStatus(n lanwire.Need) adminapi.NeedStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ns, ok := s.needs[n.Instance]; ok {
		return s.needStatusLocked(ns)
	}
	return adminapi.NeedStatus{Need: n, State: adminapi.StateSatisfied}
}

func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) {
	current, ch, cancel := s.Watch(r.URL.Query().Get("module"))
	defer cancel()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, rec := range current {
		if enc.Encode(adminapi.ServiceEvent{Type: adminapi.EventUp, Service: rec}) != nil {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			closed, err := encodeQueued(enc, ev, ch)
			if err != nil || rc.Flush() != nil || closed {
				return
			}
		}
	}
}

// watchBatch bounds how many events encodeQueued writes before a flush.
const watchBatch = 64

// encodeQueued encodes ev and the events already queued behind it, up to
// watchBatch, so that a burst (hundreds of services published while a
// master starts them) is a few writes to the watcher, not one per event.
// closed says ch was closed.
func encodeQueued(enc *json.Encoder, ev adminapi.ServiceEvent, ch <-chan adminapi.ServiceEvent) (closed bool, err error) {
	for n := 1; ; n++ {
		if err := enc.Encode(ev); err != nil {
			return false, err
		}
		if n == watchBatch {
			return false, nil
		}
		var ok bool
		select {
		case ev, ok = <-ch:
			if !ok {
				return true, nil
			}
		default:
			return false, nil
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, adminapi.ErrorBody{Error: msg})
}

func writeErr(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, adminapi.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, adminapi.ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, adminapi.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, adminapi.ErrUnauthorized):
		status = http.StatusUnauthorized
	}
	writeError(w, status, err.Error())
}
