package lancreds

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	pinned, _ := lanpki.PinnedConfig(c.token.CAHash)
	return c.request(ctx, "/v1/join", pinned, "Bearer "+c.token.Bearer())
}

func (c *Creds) renew(ctx context.Context, cert *tls.Certificate) error {
	cfg := c.TLS()
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	return c.request(ctx, "/v1/renew", cfg, "")
}

// request asks each LAN manager in turn for a certificate for a new key,
// and keeps the first one given.
func (c *Creds) request(ctx context.Context, path string, cfg *tls.Config, auth string) error {
	keyPEM, csrPEM, err := lanpki.NewMasterKey(c.cfg.MachineID)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(adminapi.JoinRequest{Machine: c.cfg.MachineID, CSR: string(csrPEM)})
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, TLSHandshakeTimeout: 5 * time.Second}}
	defer hc.CloseIdleConnections()
	var errs []error
	for _, base := range c.cfg.URLs {
		ans, err := post(ctx, hc, base+path, auth, body)
		if err == nil {
			return c.keep(ans, keyPEM, path)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
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

// keep checks what the LAN manager gave, writes it (key first, each file
// whole) and starts using it.
func (c *Creds) keep(ans adminapi.JoinAnswer, keyPEM []byte, path string) error {
	cert, err := lanpki.LoadKeyPair([]byte(ans.Cert), keyPEM)
	if err != nil {
		return fmt.Errorf("the certificate given: %w", err)
	}
	ca, err := lanpki.ParseCertPEM([]byte(ans.CA))
	if err != nil {
		return fmt.Errorf("the CA given: %w", err)
	}
	if id, ok := lanpki.MachineOf(cert.Leaf); !ok || id != c.cfg.MachineID {
		return fmt.Errorf("the certificate given is not machine %s's", c.cfg.MachineID)
	}
	if err := os.MkdirAll(c.cfg.Dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{keyFile, keyPEM, 0o600}, {certFile, []byte(ans.Cert), 0o644}, {caFile, []byte(ans.CA), 0o644}} {
		if err := writeFile(filepath.Join(c.cfg.Dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	c.set(&cert, ca)
	c.log.Info("got a LAN certificate", "via", path, "machine", c.cfg.MachineID, "notafter", cert.Leaf.NotAfter.UTC(), "renewat", lanpki.RenewAt(cert.Leaf).UTC())
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
