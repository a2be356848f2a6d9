//go:build !windows

package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
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
	keyPEM, csrPEM, err := lanpki.NewMasterKey(machine)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(adminapi.JoinRequest{Machine: machine, CSR: string(csrPEM)})
	req, _ := http.NewRequest(http.MethodPost, l.URL+"/v1/join", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok.Bearer())
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: l.ClientTLS()}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("join as %s: %v", machine, err)
	}
	defer resp.Body.Close()
	var ans adminapi.JoinAnswer
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&ans) != nil {
		t.Fatalf("join as %s: HTTP %d", machine, resp.StatusCode)
	}
	cert, err := lanpki.LoadKeyPair([]byte(ans.Cert), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := l.ClientTLS()
	cfg.Certificates = []tls.Certificate{cert}
	return cfg
}
