package lanpki

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	ca := newTestCA(t, t0)
	tok, err := NewToken(ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	s := tok.String()
	hash := strings.TrimPrefix(ca.Fingerprint(), "sha256:")
	if want := "K10" + hash + "::" + tok.ID + "." + tok.Secret; s != want {
		t.Errorf("String = %q, want %q", s, want)
	}
	if !isTokenString(tok.ID, 6) || !isTokenString(tok.Secret, 32) {
		t.Errorf("id %q secret %q", tok.ID, tok.Secret)
	}
	got, err := ParseToken("  " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got != tok {
		t.Errorf("ParseToken = %+v, want %+v", got, tok)
	}
	if got.Bearer() != tok.ID+"."+tok.Secret {
		t.Errorf("Bearer = %q", got.Bearer())
	}
	if !LooksLikeToken(s) {
		t.Error("LooksLikeToken false")
	}
	other, err := NewToken(ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == tok.ID || other.Secret == tok.Secret {
		t.Error("two tokens share their id or secret")
	}
}

func TestBareToken(t *testing.T) {
	tok, err := NewToken("")
	if err != nil {
		t.Fatal(err)
	}
	if s := tok.String(); s != tok.Bearer() {
		t.Errorf("String = %q, want the bare %q", s, tok.Bearer())
	}
	got, err := ParseToken(tok.Bearer())
	if err != nil || got != tok || got.CAHash != "" {
		t.Errorf("ParseToken = %+v, %v", got, err)
	}
	if !LooksLikeToken(tok.Bearer()) {
		t.Error("LooksLikeToken false for the bare form")
	}
}

func TestParseTokenErrors(t *testing.T) {
	const (
		hash   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		id     = "abc123"
		secret = "s3cr3ts3cr3ts3cr3ts3cr3ts3cr3tzz"
	)
	tests := map[string]string{
		"empty":              "",
		"spaces":             "   ",
		"bad prefix":         "K11" + hash + "::" + id + "." + secret,
		"no prefix":          hash + "::" + id + "." + secret,
		"short hash":         "K10" + hash[1:] + "::" + id + "." + secret,
		"long hash":          "K10" + hash + "0::" + id + "." + secret,
		"uppercase hash":     "K10" + strings.ToUpper(hash) + "::" + id + "." + secret,
		"uppercase id":       "ABC123." + secret,
		"uppercase secret":   id + "." + strings.ToUpper(secret),
		"short id":           id[1:] + "." + secret,
		"long id":            id + "x." + secret,
		"short secret":       id + "." + secret[1:],
		"long secret":        id + "." + secret + "x",
		"no dot":             id + secret,
		"two dots":           id + "." + secret + ".x",
		"one colon":          "K10" + hash + ":" + id + "." + secret,
		"empty credentials":  "K10" + hash + "::",
		"plain shared token": "lan-test-token",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ParseToken(in)
			if err == nil {
				t.Fatal("parsed")
			}
			if msg := strings.ToLower(err.Error()); strings.Contains(msg, "s3cr3t") || strings.Contains(msg, hash[:16]) {
				t.Errorf("error quotes the token: %v", err)
			}
			if LooksLikeToken(in) {
				t.Error("LooksLikeToken true")
			}
		})
	}
}

func TestNewTokenBadFingerprint(t *testing.T) {
	for _, fp := range []string{"abc", "sha256:abc", "SHA256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64)} {
		if _, err := NewToken(fp); err == nil {
			t.Errorf("NewToken(%q) succeeded", fp)
		}
	}
}

func TestHashSecret(t *testing.T) {
	sum := sha256.Sum256([]byte("secret"))
	if got := HashSecret("secret"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("HashSecret = %q", got)
	}
}
