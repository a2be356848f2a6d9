// Package lancreds owns a master's credentials on a LAN that speaks TLS:
// the client certificate it joined with (its identity is the machine id),
// kept in its state dir, and its renewal before it expires.
//
// A master given a join token (allexlanmanager token create) first
// checks that the LAN manager's CA is the one the token names, in the
// TLS handshake, and only then sends the token's secret with a CSR for a
// key it made. From then on it links with the certificate (mTLS) and
// renews it two thirds into its life.
package lancreds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/lanpki"
)

// Files in Config.Dir.
const (
	certFile = "cert.pem"
	keyFile  = "key.pem"
	caFile   = "ca.pem"
)

// Config configures Creds.
type Config struct {
	// Dir keeps the certificate, its key and the LAN's CA.
	Dir       string
	MachineID string
	// Token is a join token; it is needed only while Dir holds no
	// certificate for MachineID.
	Token string
	// URLs are the LAN managers' base URLs (https://host:port).
	URLs   []string
	Logger hclog.Logger
	// Retry is the wait after a failed join or renewal (default 5s).
	Retry time.Duration
	// Now is the clock renewals are timed by (default time.Now).
	Now func() time.Time
}

// Creds holds the master's certificate. Its methods are safe for
// concurrent use.
type Creds struct {
	cfg   Config
	token lanpki.Token
	log   hclog.Logger

	mu   sync.Mutex
	cert *tls.Certificate
	ca   *x509.Certificate
	got  chan struct{} // closed once a certificate is held
}

// New loads the certificate from Dir. Without one (or with one for
// another machine id) it needs a join token, and Run joins.
func New(cfg Config) (*Creds, error) {
	if cfg.Retry <= 0 {
		cfg.Retry = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if len(cfg.URLs) == 0 {
		return nil, errors.New("lancreds: no LAN manager URL")
	}
	c := &Creds{cfg: cfg, log: cfg.Logger, got: make(chan struct{})}
	if err := c.load(); err != nil {
		return nil, err
	}
	tok, err := joinToken(cfg)
	switch {
	case err == nil:
		// Kept even beside a certificate: it joins again should the
		// certificate expire before a renewal gets through.
		c.token = tok
	case c.cert == nil:
		return nil, err
	}
	return c, nil
}

// joinToken reads cfg.Token; one without a CA fingerprint is refused,
// since nothing could be checked before its secret is sent.
func joinToken(cfg Config) (lanpki.Token, error) {
	if cfg.Token == "" {
		return lanpki.Token{}, fmt.Errorf("no certificate in %s and no join token: give the master a token made with `allexlanmanager token create` (its config's \"token\"), or set \"laninsecure\" for a LAN manager run with -insecure", cfg.Dir)
	}
	tok, err := lanpki.ParseToken(cfg.Token)
	if err != nil {
		return tok, fmt.Errorf("join token: %w", err)
	}
	if tok.CAHash == "" {
		return tok, errors.New("join token: it carries no CA fingerprint (K10<sha256>::id.secret), so the LAN manager could not be checked before the secret is sent")
	}
	return tok, nil
}

// load reads Dir's certificate; one for another machine, or expired, is
// left for a join to replace.
func (c *Creds) load() error {
	certPEM, err1 := os.ReadFile(filepath.Join(c.cfg.Dir, certFile))
	keyPEM, err2 := os.ReadFile(filepath.Join(c.cfg.Dir, keyFile))
	caPEM, err3 := os.ReadFile(filepath.Join(c.cfg.Dir, caFile))
	if err := errors.Join(err1, err2, err3); err != nil {
		if errors.Is(err1, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("lancreds: %w", err)
	}
	cert, err := lanpki.LoadKeyPair(certPEM, keyPEM)
	if err != nil {
		// A renewal cut short between its files leaves a new key beside
		// the old certificate: join again.
		c.log.Warn("the LAN certificate in the state dir cannot be used; joining again", "dir", c.cfg.Dir, "error", err)
		return nil
	}
	ca, err := lanpki.ParseCertPEM(caPEM)
	if err != nil {
		return fmt.Errorf("lancreds: %s: %w", filepath.Join(c.cfg.Dir, caFile), err)
	}
	id, _ := lanpki.MachineOf(cert.Leaf)
	switch {
	case id != c.cfg.MachineID:
		c.log.Warn("the LAN certificate in the state dir is another machine's; joining again", "cert", id, "machine", c.cfg.MachineID)
		return nil
	case !c.cfg.Now().Before(cert.Leaf.NotAfter):
		c.log.Warn("the LAN certificate in the state dir has expired; joining again", "notafter", cert.Leaf.NotAfter)
		return nil
	}
	c.set(&cert, ca)
	return nil
}

func (c *Creds) set(cert *tls.Certificate, ca *x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	first := c.cert == nil
	c.cert, c.ca = cert, ca
	if first {
		close(c.got)
	}
}

func (c *Creds) current() (*tls.Certificate, *x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert, c.ca
}

// Ready waits until a certificate is held: the link dials only then.
func (c *Creds) Ready(ctx context.Context) error {
	select {
	case <-c.got:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TLS is the link's TLS configuration: the LAN's CA, checked for
// lanpki.ServerName, and the certificate held at each handshake (a
// renewed one from the next dial on).
func (c *Creds) TLS() *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: lanpki.ServerName,
		// RootCAs is the CA the certificate came with, which a join may
		// only learn later: verified here, from the current one.
		InsecureSkipVerify: true,
		VerifyConnection:   c.verifyServer,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := c.current()
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		},
	}
	return cfg
}

func (c *Creds) verifyServer(cs tls.ConnectionState) error {
	_, ca := c.current()
	if ca == nil {
		return errors.New("lancreds: no CA yet (not joined)")
	}
	return lanpki.VerifyServer(cs.PeerCertificates, ca)
}
