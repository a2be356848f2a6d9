package lanmanager

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/allex-go/allex/internal/jsonkeys"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/lanstate"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// authRoutes are the calls about credentials: tokens (admin), joining
// (a master token), renewing (a master's certificate) and revoking a
// machine (admin).
func (s *Server) authRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/tokens", s.auth(adminapi.RoleAdmin, func(w http.ResponseWriter, r *http.Request) {
		var req adminapi.TokenRequest
		if !readJSON(w, r, &req) {
			return
		}
		out, err := s.CreateToken(req)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, out)
	}))
	mux.HandleFunc("GET /v1/tokens", s.auth(adminapi.RoleAdmin, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Tokens())
	}))
	mux.HandleFunc("DELETE /v1/tokens/{id}", s.auth(adminapi.RoleAdmin, func(w http.ResponseWriter, r *http.Request) {
		if err := s.RevokeToken(r.PathValue("id")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /v1/machines/{id}/revoke", s.auth(adminapi.RoleAdmin, func(w http.ResponseWriter, r *http.Request) {
		var req adminapi.RevokeRequest
		if !readJSON(w, r, &req) {
			return
		}
		if err := s.RevokeMachine(r.PathValue("id"), req.Reason); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /v1/join", s.allow(adminapi.RoleMaster, s.handleJoin))
	mux.HandleFunc("POST /v1/renew", s.allow(roleMachine, s.handleJoin))
}

// CreateToken makes a token and stores its record; the secret is only in
// the answer.
func (s *Server) CreateToken(req adminapi.TokenRequest) (adminapi.CreatedToken, error) {
	if !adminapi.ValidRole(req.Role) {
		return adminapi.CreatedToken{}, fmt.Errorf("%w: role %q: want master, admin or read", adminapi.ErrInvalid, req.Role)
	}
	if req.TTLSeconds < 0 {
		return adminapi.CreatedToken{}, fmt.Errorf("%w: ttl %ds: want 0 (never expires) or more", adminapi.ErrInvalid, req.TTLSeconds)
	}
	fp := ""
	if s.cfg.TLS != nil && s.cfg.CA != nil {
		fp = s.cfg.CA.Fingerprint()
	}
	tok, err := lanpki.NewToken(fp)
	if err != nil {
		return adminapi.CreatedToken{}, err
	}
	now := time.Now().UTC().Truncate(time.Second)
	rec := store.Token{ID: tok.ID, Role: req.Role, SecretHash: lanpki.HashSecret(tok.Secret), Description: req.Description, CreatedAt: now}
	if req.TTLSeconds > 0 {
		rec.Expires = now.Add(time.Duration(req.TTLSeconds) * time.Second)
	}
	if _, taken := s.creds.Load().tokens[tok.ID]; taken {
		return adminapi.CreatedToken{}, fmt.Errorf("%w: token id %s exists; try again", adminapi.ErrConflict, tok.ID)
	}
	err = s.call(func(_ time.Time, st *lanstate.State) error { st.PutToken(rec.ID, &rec); return nil })
	if err != nil {
		return adminapi.CreatedToken{}, err
	}
	s.log.Info("token created", "id", rec.ID, "role", rec.Role, "expires", rec.Expires)
	return adminapi.CreatedToken{TokenInfo: tokenInfo(rec), Token: tok.String()}, nil
}

// Tokens lists the tokens made, by id, without their secrets.
func (s *Server) Tokens() []adminapi.TokenInfo {
	t := s.creds.Load()
	out := make([]adminapi.TokenInfo, 0, len(t.tokens))
	for _, rec := range t.tokens {
		out = append(out, tokenInfo(rec))
	}
	slices.SortFunc(out, func(a, b adminapi.TokenInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func tokenInfo(t store.Token) adminapi.TokenInfo {
	return adminapi.TokenInfo{ID: t.ID, Role: t.Role, Description: t.Description, CreatedAt: t.CreatedAt, Expires: t.Expires}
}

// RevokeToken deletes a token: it is refused from then on. Certificates
// a master token bought stay valid (revoke the machine for those).
func (s *Server) RevokeToken(id string) error {
	if _, ok := s.creds.Load().tokens[id]; !ok {
		return fmt.Errorf("%w: no token %q", adminapi.ErrNotFound, id)
	}
	s.log.Info("token revoked", "id", id)
	return s.call(func(_ time.Time, st *lanstate.State) error { st.PutToken(id, nil); return nil })
}

// RevokeMachine cuts a machine off for good (lanstate.Revoke).
func (s *Server) RevokeMachine(id, reason string) error {
	if !lanwire.ValidName(id) {
		return fmt.Errorf("%w: machine %q: want 1-128 of [A-Za-z0-9_.-]", adminapi.ErrInvalid, id)
	}
	if reason == "" {
		reason = "revoked by an administrator"
	}
	rec := store.Revocation{Machine: id, At: time.Now().UTC(), Reason: reason}
	return s.call(func(_ time.Time, st *lanstate.State) error { st.Revoke(rec); return nil })
}

// handleJoin answers a join (a master token; any machine id) and a
// renewal (a master's certificate; its own id only) with a certificate
// for the CSR's key.
func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request, p principal) {
	var req adminapi.JoinRequest
	if !readJSON(w, r, &req) {
		return
	}
	err := s.canIssue(r, p, req.Machine)
	if err != nil {
		writeErr(w, err)
		return
	}
	cert, err := s.cfg.CA.SignMaster([]byte(req.CSR), req.Machine, time.Now(), s.cfg.CertTTL)
	if err != nil {
		writeErr(w, fmt.Errorf("%w: %w", adminapi.ErrInvalid, err))
		return
	}
	how := "joined"
	if p.role == roleMachine {
		how = "renewed"
	}
	s.log.Info("issued a master certificate", "machine", req.Machine, "how", how, "token", p.token, "ttl", s.cfg.CertTTL)
	writeJSON(w, http.StatusOK, adminapi.JoinAnswer{Cert: string(cert), CA: string(s.cfg.CA.CertPEM)})
}

func (s *Server) canIssue(r *http.Request, p principal, machine string) error {
	switch {
	case r.TLS == nil:
		return fmt.Errorf("%w: this LAN manager speaks plain HTTP (-insecure); it issues no certificates", adminapi.ErrForbidden)
	case s.cfg.CA == nil || s.cfg.CA.Key == nil:
		return fmt.Errorf("%w: this LAN manager has no CA key (-tls-ca without its key); give masters certificates from your CA", adminapi.ErrForbidden)
	case !lanwire.ValidName(machine):
		return fmt.Errorf("%w: machine %q: want 1-128 of [A-Za-z0-9_.-]", adminapi.ErrInvalid, machine)
	case p.role == roleMachine && p.machine != machine:
		return fmt.Errorf("%w: machine %s cannot renew machine %s's certificate", adminapi.ErrForbidden, p.machine, machine)
	}
	if rv, ok := s.creds.Load().revoked[machine]; ok {
		return fmt.Errorf("%w: machine %s was revoked at %s", adminapi.ErrForbidden, machine, rv.At.UTC().Format(time.RFC3339))
	}
	return nil
}

// readJSON decodes a small JSON body strictly (no unknown or repeated
// keys); it answers 400 itself when it cannot.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil && len(strings.TrimSpace(string(body))) == 0 {
		return true // every field is optional where a body may be empty
	}
	if err == nil {
		err = jsonkeys.Unique(body)
	}
	if err == nil {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		err = dec.Decode(v)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxBody))
			return false
		}
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}
