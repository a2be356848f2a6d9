//go:build !windows

package e2e

import (
	"context"
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/allex-go/allex/agent/lancreds"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanpki"
)

// Bearer is the LAN manager's own token as sent in Authorization.
func (l *LAN) Bearer() string {
	if _, b, ok := lanpki.SplitPin(l.Token); ok {
		return b
	}
	return l.Token
}

// HTTPClient is an HTTP client that trusts this LAN manager's CA.
func (l *LAN) HTTPClient() *http.Client {
	return adminclient.New(l.URL, l.Token).HTTP
}

// ClientTLS is a TLS configuration that trusts this LAN manager's CA and
// shows no certificate (nil with -insecure).
func (l *LAN) ClientTLS() *tls.Config {
	if l.Insecure {
		return nil
	}
	fp, _, _ := lanpki.SplitPin(l.Token)
	cfg, _ := lanpki.PinnedConfig(fp)
	return cfg
}

// MasterTLS joins as machine with the LAN's join token, as a master
// does, and returns a TLS configuration showing the certificate got (nil
// with -insecure).
func (l *LAN) MasterTLS(t testing.TB, machine string) *tls.Config {
	t.Helper()
	if l.Insecure {
		return nil
	}
	tok, err := lanpki.ParseToken(l.JoinToken)
	if err != nil {
		t.Fatalf("join token: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cert, _, err := lancreds.Join(ctx, l.URL, tok, machine, nil)
	if err != nil {
		t.Fatalf("join as %s: %v", machine, err)
	}
	cfg := l.ClientTLS()
	cfg.Certificates = []tls.Certificate{cert}
	return cfg
}
