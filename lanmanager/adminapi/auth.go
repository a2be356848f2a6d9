package adminapi

import (
	"errors"
	"time"
)

// ErrForbidden: the caller is known but its role or identity does not
// allow the call (HTTP 403).
var ErrForbidden = errors.New("forbidden")

// Token roles. A master token only joins (its secret buys one client
// certificate); admin reads and writes; read sees services, the watch,
// needs and machines.
const (
	RoleMaster = "master"
	RoleAdmin  = "admin"
	RoleRead   = "read"
)

// ValidRole says whether r is a token role.
func ValidRole(r string) bool { return r == RoleMaster || r == RoleAdmin || r == RoleRead }

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Role        string `json:"role"`
	TTLSeconds  int64  `json:"ttlseconds,omitempty"` // 0: never expires
	Description string `json:"description,omitempty"`
}

// TokenInfo is a token as listed; the secret is only in CreatedToken.
type TokenInfo struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdat"`
	Expires     time.Time `json:"expires,omitzero"`
}

// CreatedToken answers POST /v1/tokens: the token to hand out, which
// carries the CA's fingerprint when the LAN manager speaks TLS.
type CreatedToken struct {
	TokenInfo
	Token string `json:"token"`
}

// JoinRequest is the body of POST /v1/join (with a master token) and of
// POST /v1/renew (with the master's certificate; Machine must be its own).
type JoinRequest struct {
	Machine string `json:"machine"`
	CSR     string `json:"csr"` // PEM
}

// JoinAnswer carries the master's certificate and the LAN's CA.
type JoinAnswer struct {
	Cert string `json:"cert"` // PEM
	CA   string `json:"ca"`   // PEM
}

// RevokeRequest is the body of POST /v1/machines/{id}/revoke.
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"`
}
