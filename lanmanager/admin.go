package lanmanager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/lanstate"
	"github.com/allex-go/allex/lanwire"
)

const maxBody = 1 << 20

// watchQueue is the channel of one watch stream; the loop holds more
// (watchBacklog).
const watchQueue = 1024

// ServiceFilter selects services; empty fields match everything.
type ServiceFilter = lanstate.ServiceFilter

// AddNeed adds a need (origin "api"). Errors wrap adminapi.ErrInvalid or
// adminapi.ErrConflict.
func (s *Server) AddNeed(n lanwire.Need) error { return s.AddNeeds([]lanwire.Need{n}) }

// AddNeeds adds several needs at once, all or none: one invalid or
// conflicting need (or one named twice) refuses the whole batch, with the
// same errors as AddNeed. It returns once the needs are stored.
func (s *Server) AddNeeds(needs []lanwire.Need) error {
	_, err := s.addNeeds(needs)
	return err
}

// addNeeds adds needs and returns their status as of their commit.
func (s *Server) addNeeds(needs []lanwire.Need) ([]adminapi.NeedStatus, error) {
	for _, n := range needs {
		if err := n.CheckFixedPorts(); err != nil {
			return nil, fmt.Errorf("%w: %w", adminapi.ErrInvalid, err)
		}
	}
	var out []adminapi.NeedStatus
	err := s.call(func(now time.Time, st *lanstate.State) error {
		if err := st.AddNeeds(now, needs, "api"); err != nil {
			return err
		}
		for _, n := range needs {
			ns, _ := st.NeedStatus(n.Instance)
			out = append(out, ns)
		}
		return nil
	})
	return out, err
}

// RemoveNeed removes a need; a copy that runs for it is told to stop, and
// the instance is not offered again until that copy is gone. Unknown
// instances wrap adminapi.ErrNotFound.
func (s *Server) RemoveNeed(instance string) error {
	return s.call(func(_ time.Time, st *lanstate.State) error { return st.RemoveNeed(instance) })
}

// Needs lists every need with where it stands, sorted by instance.
func (s *Server) Needs() ([]adminapi.NeedStatus, error) {
	var out []adminapi.NeedStatus
	err := s.call(func(_ time.Time, st *lanstate.State) error { out = st.Needs(); return nil })
	return out, err
}

// Services lists published services matching f, sorted by instance.
func (s *Server) Services(f ServiceFilter) ([]lanwire.ServiceRecord, error) {
	var out []lanwire.ServiceRecord
	err := s.call(func(_ time.Time, st *lanstate.State) error { out = st.Services(f); return nil })
	return out, err
}

// Service returns one published service or an error wrapping
// adminapi.ErrNotFound.
func (s *Server) Service(instance string) (lanwire.ServiceRecord, error) {
	var rec lanwire.ServiceRecord
	err := s.call(func(_ time.Time, st *lanstate.State) error {
		var ok bool
		if rec, ok = st.Service(instance); !ok {
			return fmt.Errorf("%w: no service %q", adminapi.ErrNotFound, instance)
		}
		return nil
	})
	return rec, err
}

// Machines lists known masters (connected, or away with copies), sorted
// by id.
func (s *Server) Machines() ([]adminapi.MachineInfo, error) {
	var out []adminapi.MachineInfo
	err := s.call(func(_ time.Time, st *lanstate.State) error { out = st.Machines(); return nil })
	return out, err
}

// Watch subscribes to service events for module ("" for all). It returns
// the current services, a channel of later events, and a cancel func. The
// channel is closed when the watcher falls watchBacklog events behind or
// the server stops.
func (s *Server) Watch(module string) ([]lanwire.ServiceRecord, <-chan adminapi.ServiceEvent, func()) {
	w := &watcher{module: module, ch: make(chan adminapi.ServiceEvent, watchQueue)}
	done := make(chan []lanwire.ServiceRecord, 1)
	closed := func() ([]lanwire.ServiceRecord, <-chan adminapi.ServiceEvent, func()) {
		ch := make(chan adminapi.ServiceEvent)
		close(ch)
		return nil, ch, func() {}
	}
	if !s.postCall(evWatch{w: w, done: done}) {
		return closed()
	}
	select {
	case current := <-done:
		return current, w.ch, func() { s.postCall(evUnwatch{w: w}) }
	case <-s.stopped:
		return closed()
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET "+lanwire.Path, s.handleLink)
	mux.HandleFunc("GET /v1/needs", s.auth(adminapi.RoleRead, func(w http.ResponseWriter, _ *http.Request) {
		out, err := s.Needs()
		writeResult(w, out, err)
	}))
	mux.HandleFunc("POST /v1/needs", s.auth(adminapi.RoleAdmin, s.handleAddNeed))
	mux.HandleFunc("DELETE /v1/needs/{instance}", s.auth(adminapi.RoleAdmin, func(w http.ResponseWriter, r *http.Request) {
		if err := s.RemoveNeed(r.PathValue("instance")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("GET /v1/services", s.auth(adminapi.RoleRead, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		out, err := s.Services(ServiceFilter{Module: q.Get("module"), Instance: q.Get("instance")})
		writeResult(w, out, err)
	}))
	mux.HandleFunc("GET /v1/services/{instance}", s.auth(adminapi.RoleRead, func(w http.ResponseWriter, r *http.Request) {
		out, err := s.Service(r.PathValue("instance"))
		writeResult(w, out, err)
	}))
	mux.HandleFunc("GET /v1/services/watch", s.auth(adminapi.RoleRead, s.handleWatch))
	mux.HandleFunc("GET /v1/machines", s.auth(adminapi.RoleRead, func(w http.ResponseWriter, _ *http.Request) {
		out, err := s.Machines()
		writeResult(w, out, err)
	}))
	s.authRoutes(mux)
	return mux
}

// auth wraps a handler that needs role want and not the caller.
func (s *Server) auth(want string, h http.HandlerFunc) http.HandlerFunc {
	return s.allow(want, func(w http.ResponseWriter, r *http.Request, _ principal) { h(w, r) })
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
	out, err := s.addNeeds([]lanwire.Need{n})
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, out[0])
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
	out, err := s.addNeeds(needs)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Feed != nil {
		serveFeed(w, r, s.cfg.Feed)
		return
	}
	if since, err := sinceOf(r); err != nil || since != 0 {
		writeError(w, http.StatusBadRequest, "?since= needs LAN managers on etcd (-store etcd://...), which keep revisions; watch again without it")
		return
	}
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
const watchBatch = 256

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

// writeResult answers 200 with v, or the error.
func writeResult(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
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
	case errors.Is(err, adminapi.ErrForbidden):
		status = http.StatusForbidden
	case errors.Is(err, adminapi.ErrCompacted):
		status = http.StatusGone
	}
	writeError(w, status, err.Error())
}
