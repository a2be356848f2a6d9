package lanpki

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// Join tokens have the shape of k3s's: "K10" <CA hash> "::" <id> "." <secret>.
// The LAN manager looks a token up by its id and keeps only a hash of its
// secret; the CA hash lets a master without the CA trust the LAN manager.
const (
	tokenPrefix       = "K10"
	fingerprintPrefix = "sha256:"
	hashHexLen        = 64
	tokenIDLen        = 6
	tokenSecretLen    = 32
	tokenAlphabet     = "abcdefghijklmnopqrstuvwxyz0123456789"
)

// Token is a join token.
type Token struct {
	// CAHash pins the LAN manager's CA: "sha256:<hex>", or "" when the
	// token was given without it.
	CAHash     string
	ID, Secret string
}

// NewToken makes a token with a random id and secret, pinning the CA of
// caFingerprint (as Fingerprint returns it) unless that is "".
func NewToken(caFingerprint string) (Token, error) {
	if caFingerprint != "" && !validFingerprint(caFingerprint) {
		return Token{}, errors.New(`CA fingerprint is not "sha256:" and 64 lowercase hex digits`)
	}
	return Token{
		CAHash: caFingerprint,
		ID:     randomString(tokenIDLen),
		Secret: randomString(tokenSecretLen),
	}, nil
}

func validFingerprint(fp string) bool {
	hash, ok := strings.CutPrefix(fp, fingerprintPrefix)
	return ok && isLowerHex(hash)
}

// randomString draws n characters of tokenAlphabet. Bytes of 252 and above
// are dropped, so that each of the 36 characters is as likely as another.
func randomString(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		rand.Read(buf) // never fails: crypto/rand crashes the program instead
		for _, b := range buf {
			if b < 252 && len(out) < n {
				out = append(out, tokenAlphabet[b%36])
			}
		}
	}
	return string(out)
}

// ParseToken parses a join token, full or bare ("id.secret"). Its errors
// say what is wrong without quoting the token, which holds a secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("the join token is empty")
	}
	var t Token
	creds := s
	if pin, rest, ok := strings.Cut(s, "::"); ok {
		hash, ok := strings.CutPrefix(pin, tokenPrefix)
		if !ok {
			return Token{}, errors.New(`the join token does not start with "K10"`)
		}
		if !isLowerHex(hash) {
			return Token{}, errors.New(`the join token's CA hash (between "K10" and "::") is not 64 lowercase hex digits`)
		}
		t.CAHash, creds = fingerprintPrefix+hash, rest
	}
	var err error
	t.ID, t.Secret, err = parseCreds(creds)
	return t, err
}

func parseCreds(creds string) (id, secret string, err error) {
	id, secret, ok := strings.Cut(creds, ".")
	switch {
	case !ok:
		return "", "", errors.New(`the join token is not "K10<CA hash>::<id>.<secret>" nor "<id>.<secret>"`)
	case !isTokenString(id, tokenIDLen):
		return "", "", errors.New("the join token's id is not 6 characters of a-z and 0-9")
	case !isTokenString(secret, tokenSecretLen):
		return "", "", errors.New("the join token's secret is not 32 characters of a-z and 0-9")
	}
	return id, secret, nil
}

func isLowerHex(s string) bool {
	return len(s) == hashHexLen && strings.Trim(s, "0123456789abcdef") == ""
}

func isTokenString(s string, n int) bool {
	return len(s) == n && strings.Trim(s, tokenAlphabet) == ""
}

// SplitPin splits any credential carrying a CA fingerprint,
// "K10<64 hex>::rest" (a made token, or the LAN manager's own token so
// pinned), into the fingerprint ("sha256:<hex>") and the bearer part.
func SplitPin(s string) (fingerprint, bearer string, ok bool) {
	pin, bearer, found := strings.Cut(strings.TrimSpace(s), "::")
	hash, prefixed := strings.CutPrefix(pin, tokenPrefix)
	if !found || !prefixed || !isLowerHex(hash) || bearer == "" {
		return "", "", false
	}
	return fingerprintPrefix + hash, bearer, true
}

// String is the token as given to an operator: the full form when it pins
// a CA, else the bare one.
func (t Token) String() string {
	if t.CAHash == "" {
		return t.Bearer()
	}
	return tokenPrefix + strings.TrimPrefix(t.CAHash, fingerprintPrefix) + "::" + t.Bearer()
}

// Bearer is what a master sends in "Authorization: Bearer": the id and
// secret, without the CA hash the LAN manager has no use for.
func (t Token) Bearer() string { return t.ID + "." + t.Secret }

// HashSecret is the hex SHA-256 of a secret, what the LAN manager stores
// instead of the secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// LooksLikeToken says whether s is a join token, full or bare, as opposed
// to the plain shared token older LAN managers took.
func LooksLikeToken(s string) bool {
	_, err := ParseToken(s)
	return err == nil
}
