package lanmanager

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// Who may call what. A caller is one of:
//   - a master, by its client certificate (TLS): it links and renews its
//     certificate, as the machine the certificate names and no other;
//   - a LAN manager, by its certificate: a standby relaying a master it
//     verified, named in lanwire.RelayedMachineHeader;
//   - a bearer token: the LAN manager's own (-token: admin; over plain
//     HTTP also a master's link, as before TLS) or a token made with
//     `allexlanmanager token create`, whose role says what it may do.
const roleMachine = "machine"

type principal struct {
	role    string
	machine string // roleMachine: the certificate's machine id
	token   string // the token's id ("root" for -token), for logs
}

// may says whether p may make a call that needs role want. Admin may do
// what read may.
func (p principal) may(want string) bool {
	return p.role == want || (want == adminapi.RoleRead && p.role == adminapi.RoleAdmin)
}

// authTable is the tokens and revocations, replaced whole when a commit
// changes them, so that requests read it without a lock.
type authTable struct {
	tokens  map[string]store.Token
	revoked map[string]store.Revocation
}

func newAuthTable(snap store.Snapshot) *authTable {
	t := &authTable{tokens: map[string]store.Token{}, revoked: map[string]store.Revocation{}}
	for _, tok := range snap.Tokens {
		t.tokens[tok.ID] = tok
	}
	for _, r := range snap.Revoked {
		t.revoked[r.Machine] = r
	}
	return t
}

// with returns the table with a committed batch's changes.
func (t *authTable) with(b store.Batch) *authTable {
	n := &authTable{tokens: maps.Clone(t.tokens), revoked: maps.Clone(t.revoked)}
	for id, tok := range b.Tokens {
		if tok == nil {
			delete(n.tokens, id)
		} else {
			n.tokens[id] = *tok
		}
	}
	for id, r := range b.Revoked {
		if r == nil {
			delete(n.revoked, id)
		} else {
			n.revoked[id] = *r
		}
	}
	return n
}

var (
	errNoCredentials = fmt.Errorf("%w: missing or wrong bearer token", adminapi.ErrUnauthorized)
	errExpired       = fmt.Errorf("%w: token expired", adminapi.ErrUnauthorized)
)

// who says who is calling. A wrong credential is an error; a revoked
// machine's certificate is ErrForbidden.
func (s *Server) who(r *http.Request, now time.Time) (principal, error) {
	t := s.creds.Load()
	if id := certMachine(r); id != "" {
		if rv, ok := t.revoked[id]; ok {
			return principal{}, fmt.Errorf("%w: machine %s was revoked at %s", adminapi.ErrForbidden, id, rv.At.UTC().Format(time.RFC3339))
		}
		return principal{role: roleMachine, machine: id}, nil
	}
	bearer, ok := bearerOf(r)
	if !ok {
		return principal{}, errNoCredentials
	}
	return checkBearer(bearer, s.cfg.Token, t.lookup, now)
}

func (t *authTable) lookup(id string) (store.Token, bool) {
	rec, ok := t.tokens[id]
	return rec, ok
}

// BearerRole checks r's bearer token against root (admin) and the made
// tokens lookup finds, and returns its role: a standby checks the
// callers of its watch stream so, reading the tokens from etcd.
func BearerRole(r *http.Request, root string, lookup func(id string) (store.Token, bool)) (string, error) {
	bearer, ok := bearerOf(r)
	if !ok {
		return "", errNoCredentials
	}
	p, err := checkBearer(bearer, root, lookup, time.Now())
	return p.role, err
}

// checkBearer finds a made token by its id and compares its secret's
// hash in constant time.
func checkBearer(bearer, root string, lookup func(id string) (store.Token, bool), now time.Time) (principal, error) {
	if subtle.ConstantTimeCompare([]byte(bearer), []byte(root)) == 1 {
		return principal{role: adminapi.RoleAdmin, token: "root"}, nil
	}
	tok, err := lanpki.ParseToken(bearer)
	if err != nil {
		return principal{}, errNoCredentials
	}
	rec, ok := lookup(tok.ID)
	if !ok || subtle.ConstantTimeCompare([]byte(lanpki.HashSecret(tok.Secret)), []byte(rec.SecretHash)) != 1 {
		return principal{}, errNoCredentials
	}
	if !rec.Expires.IsZero() && !now.Before(rec.Expires) {
		return principal{}, errExpired
	}
	return principal{role: rec.Role, token: rec.ID}, nil
}

// MayRead says whether role may make read calls.
func MayRead(role string) bool { return principal{role: role}.may(adminapi.RoleRead) }

// certMachine is the machine r's certificate speaks for: a master's own,
// or the one a LAN manager relays (a LAN manager's certificate without
// that header speaks for nobody: a forwarded call carries its bearer).
func certMachine(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	leaf := r.TLS.PeerCertificates[0]
	if lanpki.IsLANManager(leaf) {
		return r.Header.Get(lanwire.RelayedMachineHeader)
	}
	id, _ := lanpki.MachineOf(leaf)
	return id
}

// bearerOf reads "Authorization: Bearer <token>"; the scheme's case does
// not matter and more than one space may follow it (RFC 7235, 2.1).
func bearerOf(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimLeft(tok, " ")
	return tok, ok && strings.EqualFold(scheme, "Bearer") && tok != ""
}

// allow wraps h: the caller must hold role want. A caller that proved
// who it is is trusted by the connection guard.
func (s *Server) allow(want string, h func(http.ResponseWriter, *http.Request, principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.who(r, time.Now())
		if err != nil {
			writeErr(w, err)
			return
		}
		s.authenticated(r)
		if !p.may(want) {
			writeErr(w, fmt.Errorf("%w: %s needs the %s role; this caller is %s", adminapi.ErrForbidden, r.URL.Path, want, p.describe()))
			return
		}
		h(w, r, p)
	}
}

func (p principal) describe() string {
	switch p.role {
	case roleMachine:
		return "machine " + p.machine
	case adminapi.RoleAdmin:
		return "an admin token"
	}
	return "a " + p.role + " token"
}

// errLinkNeedsCert answers a link without a master's certificate on a
// LAN manager that speaks TLS.
var errLinkNeedsCert = errors.New("a master links with its certificate: give the master a join token " +
	"(allexlanmanager token create -role master) in its config's \"token\"")
