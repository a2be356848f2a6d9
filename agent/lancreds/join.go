package lancreds

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanpki"
)

// ErrRefused: a LAN manager refused the join or the renewal (a wrong,
// expired or revoked token; a revoked machine). Run retries anyway, more
// slowly: an operator may fix it on the LAN manager's side.
var ErrRefused = errors.New("LAN manager refused")

// Run joins when no certificate is held, then renews it two thirds into
// its life, until ctx is done. A failure is logged and retried.
func (c *Creds) Run(ctx context.Context) {
	for ctx.Err() == nil {
		wait := c.step(ctx)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// step joins or renews when due and says how long to wait for the next.
func (c *Creds) step(ctx context.Context) time.Duration {
	cert, _ := c.current()
	if cert != nil {
		if due := lanpki.RenewAt(cert.Leaf); c.cfg.Now().Before(due) {
			return due.Sub(c.cfg.Now())
		}
	}
	expired := cert != nil && !c.cfg.Now().Before(cert.Leaf.NotAfter)
	how, err := "join", error(nil)
	if cert == nil || (expired && c.token.ID != "") {
		err = c.join(ctx)
	} else {
		how, err = "renew", c.renew(ctx, cert)
	}
	if err == nil {
		return 0
	}
	if ctx.Err() == nil {
		c.log.Error("cannot get a LAN certificate", "how", how, "error", err)
	}
	if errors.Is(err, ErrRefused) {
		return 6 * c.cfg.Retry
	}
	return c.cfg.Retry
}

func (c *Creds) join(ctx context.Context) error {
	var errs []error
	for _, base := range c.cfg.URLs {
		is, err := join(ctx, base, c.token, c.cfg.MachineID, nil)
		if err == nil {
			return c.keep(is, "/v1/join")
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Creds) renew(ctx context.Context, cert *tls.Certificate) error {
	cfg := c.TLS()
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	hc := client(cfg, nil)
	defer hc.CloseIdleConnections()
	var errs []error
	for _, base := range c.cfg.URLs {
		is, err := ask(ctx, hc, base+"/v1/renew", "", c.cfg.MachineID)
		if err == nil {
			return c.keep(is, "/v1/renew")
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Join gets machine a certificate from the LAN manager at base
// (https://host:port) with a join token, as a master does on its first
// start: the LAN manager's CA is checked against the token in the TLS
// handshake, before the secret leaves. dial, when not nil, makes the
// connection (a simulated master dials from its own address). It returns
// the certificate, with its key, and the LAN's CA; harnesses that play
// masters use it.
func Join(ctx context.Context, base string, tok lanpki.Token, machine string, dial Dial) (tls.Certificate, *x509.Certificate, error) {
	is, err := join(ctx, base, tok, machine, dial)
	return is.cert, is.ca, err
}

// Dial makes a connection, as net.Dialer.DialContext does.
type Dial func(ctx context.Context, network, addr string) (net.Conn, error)

func join(ctx context.Context, base string, tok lanpki.Token, machine string, dial Dial) (issued, error) {
	pinned, _ := lanpki.PinnedConfig(tok.CAHash)
	hc := client(pinned, dial)
	defer hc.CloseIdleConnections()
	is, err := ask(ctx, hc, base+"/v1/join", "Bearer "+tok.Bearer(), machine)
	if err == nil && lanpki.Fingerprint(is.ca) != tok.CAHash {
		err = fmt.Errorf("%s: the CA given is not the token's", base)
	}
	return is, err
}

func client(cfg *tls.Config, dial Dial) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DialContext: dial, TLSHandshakeTimeout: 5 * time.Second}}
}

// issued is a certificate a LAN manager gave, with its key and the LAN's
// CA, parsed and as PEM.
type issued struct {
	cert                   tls.Certificate
	ca                     *x509.Certificate
	keyPEM, certPEM, caPEM []byte
}

// ask posts a CSR for a new key of machine to url and checks what comes
// back: a certificate for that key and that machine, and a CA.
func ask(ctx context.Context, hc *http.Client, url, auth, machine string) (issued, error) {
	keyPEM, csrPEM, err := lanpki.NewMasterKey(machine)
	if err != nil {
		return issued{}, err
	}
	body, _ := json.Marshal(adminapi.JoinRequest{Machine: machine, CSR: string(csrPEM)})
	ans, err := post(ctx, hc, url, auth, body)
	if err != nil {
		return issued{}, err
	}
	is := issued{keyPEM: keyPEM, certPEM: []byte(ans.Cert), caPEM: []byte(ans.CA)}
	if is.cert, err = lanpki.LoadKeyPair(is.certPEM, keyPEM); err != nil {
		return issued{}, fmt.Errorf("%s: the certificate given: %w", url, err)
	}
	if is.ca, err = lanpki.ParseCertPEM(is.caPEM); err != nil {
		return issued{}, fmt.Errorf("%s: the CA given: %w", url, err)
	}
	if id, ok := lanpki.MachineOf(is.cert.Leaf); !ok || id != machine {
		return issued{}, fmt.Errorf("%s: the certificate given is not machine %s's", url, machine)
	}
	return is, nil
}

func post(ctx context.Context, hc *http.Client, url, auth string, body []byte) (adminapi.JoinAnswer, error) {
	var ans adminapi.JoinAnswer
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return ans, err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return ans, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var eb adminapi.ErrorBody
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return ans, fmt.Errorf("%s: %w: %s", url, ErrRefused, msg)
		}
		return ans, fmt.Errorf("%s: HTTP %d: %s", url, resp.StatusCode, msg)
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return ans, fmt.Errorf("%s: %w", url, err)
	}
	return ans, nil
}

// keep writes what a LAN manager gave (key first, each file whole) and
// starts using it.
func (c *Creds) keep(is issued, path string) error {
	if err := os.MkdirAll(c.cfg.Dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{keyFile, is.keyPEM, 0o600}, {certFile, is.certPEM, 0o644}, {caFile, is.caPEM, 0o644}} {
		if err := writeFile(filepath.Join(c.cfg.Dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	c.set(&is.cert, is.ca)
	c.log.Info("got a LAN certificate", "via", path, "machine", c.cfg.MachineID, "notafter", is.cert.Leaf.NotAfter.UTC(), "renewat", lanpki.RenewAt(is.cert.Leaf).UTC())
	return nil
}

// writeFile replaces path whole: a crash leaves the old file or the new.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
