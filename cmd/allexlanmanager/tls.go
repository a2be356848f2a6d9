package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/lanpki"
)

// tlsFlags say how the LAN manager speaks TLS: with the CA in its data
// dir (made on first start; on etcd, the LAN's CA kept there), with the
// operator's files, or not at all (-insecure).
type tlsFlags struct {
	insecure             bool
	cert, key, ca, caKey string
	sans                 listFlag
	certTTL              time.Duration
}

func (f *tlsFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.insecure, "insecure", false, "serve plain HTTP: anyone on the network reads the traffic, and masters link with the LAN's shared token as any machine")
	fs.StringVar(&f.cert, "tls-cert", "", "the LAN manager's certificate (PEM; with -tls-key and -tls-ca) instead of one from the CA in -data")
	fs.StringVar(&f.key, "tls-key", "", "the key of -tls-cert")
	fs.StringVar(&f.ca, "tls-ca", "", "the CA that signed -tls-cert and signs masters' certificates")
	fs.StringVar(&f.caKey, "tls-ca-key", "", "the key of -tls-ca; without it masters cannot join with a token (give them certificates from your CA)")
	fs.Var(&f.sans, "tls-san", "another name or IP for the LAN manager's certificate (repeatable; clients verify "+lanpki.ServerName+", which it always carries)")
	fs.DurationVar(&f.certTTL, "cert-ttl", 30*24*time.Hour, "lifetime of a master's certificate; masters renew at two thirds of it")
}

func (f *tlsFlags) check() error {
	given := f.cert != "" || f.key != "" || f.ca != "" || f.caKey != ""
	switch {
	case f.insecure && (given || len(f.sans) > 0):
		return errors.New("-insecure serves plain HTTP: give no -tls-* flags with it")
	case given && (f.cert == "" || f.key == "" || f.ca == ""):
		return errors.New("-tls-cert, -tls-key and -tls-ca go together (-tls-ca-key is optional)")
	case f.certTTL < time.Minute:
		return fmt.Errorf("-cert-ttl %v: want at least 1m", f.certTTL)
	}
	return nil
}

// serverTLS is what the LAN manager serves with: its certificate, the CA
// it verifies masters by and issues their certificates with.
type serverTLS struct {
	ca   *lanpki.CA
	cert tls.Certificate
}

func (t *serverTLS) config() *tls.Config { return lanpki.ServerConfig(t.cert, t.ca.Pool()) }

// clientConfig is how this LAN manager calls another (a standby relaying
// to the leader): its own certificate, which says it is a LAN manager.
func (t *serverTLS) clientConfig() *tls.Config { return lanpki.ClientConfig(t.ca.Pool(), &t.cert) }

// sharedCA gets the LAN's CA from a store LAN managers share; nil for a
// LAN manager alone, whose CA is in its data dir.
type sharedCA func(ctx context.Context, create func() (certPEM, keyPEM []byte, err error)) (certPEM, keyPEM []byte, err error)

// load sets up TLS as the flags say; nil with -insecure.
func (f *tlsFlags) load(ctx context.Context, dataDir string, hosts []string, shared sharedCA, log hclog.Logger) (*serverTLS, error) {
	if f.insecure {
		log.Warn("serving plain HTTP (-insecure): the LAN's traffic and its token can be read on the network")
		return nil, nil
	}
	if f.cert != "" {
		return f.operatorFiles()
	}
	ca, err := f.ownCA(ctx, dataDir, shared, log)
	if err != nil {
		return nil, err
	}
	cert, err := ca.IssueServer(append(hosts, f.sans...), time.Now(), 365*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("TLS: server certificate: %w", err)
	}
	return &serverTLS{ca: ca, cert: cert}, nil
}

func (f *tlsFlags) ownCA(ctx context.Context, dataDir string, shared sharedCA, log hclog.Logger) (*lanpki.CA, error) {
	if shared == nil {
		ca, created, err := lanpki.LoadOrCreateCA(filepath.Join(dataDir, "tls"), time.Now())
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		if created {
			log.Info("created the LAN's CA", "dir", filepath.Join(dataDir, "tls"), "fingerprint", ca.Fingerprint())
		}
		return ca, nil
	}
	certPEM, keyPEM, err := shared(ctx, func() ([]byte, []byte, error) {
		ca, err := lanpki.NewCA(time.Now())
		if err != nil {
			return nil, nil, err
		}
		key, err := ca.KeyPEM()
		return ca.CertPEM, key, err
	})
	if err != nil {
		return nil, fmt.Errorf("TLS: the LAN's CA in etcd: %w", err)
	}
	return lanpki.LoadCA(certPEM, keyPEM)
}

func (f *tlsFlags) operatorFiles() (*serverTLS, error) {
	read := func(flagName, path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flagName, err)
		}
		return b, nil
	}
	caPEM, err := read("-tls-ca", f.ca)
	if err != nil {
		return nil, err
	}
	var caKey []byte
	if f.caKey != "" {
		if caKey, err = read("-tls-ca-key", f.caKey); err != nil {
			return nil, err
		}
	}
	ca, err := lanpki.LoadCA(caPEM, caKey)
	if err != nil {
		return nil, fmt.Errorf("-tls-ca: %w", err)
	}
	certPEM, err := read("-tls-cert", f.cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read("-tls-key", f.key)
	if err != nil {
		return nil, err
	}
	cert, err := lanpki.LoadKeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert, -tls-key: %w", err)
	}
	if !lanpki.IsLANManager(cert.Leaf) {
		return nil, fmt.Errorf("-tls-cert: want a server certificate carrying the DNS name %s (clients verify it)", lanpki.ServerName)
	}
	if err := lanpki.VerifyServer([]*x509.Certificate{cert.Leaf}, ca.Cert); err != nil {
		return nil, fmt.Errorf("-tls-cert is not signed by -tls-ca: %w", err)
	}
	cert.Certificate = append(cert.Certificate, ca.Cert.Raw)
	return &serverTLS{ca: ca, cert: cert}, nil
}

// hostsOf names the LAN manager for its certificate: the host it listens
// on and is advertised at, its host name, and its interfaces' addresses.
func hostsOf(addrs ...string) []string {
	var hosts []string
	for _, a := range addrs {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" && !net.ParseIP(h).IsUnspecified() {
			hosts = append(hosts, h)
		}
	}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	if ifs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifs {
			if n, ok := a.(*net.IPNet); ok {
				hosts = append(hosts, n.IP.String())
			}
		}
	}
	return hosts
}
