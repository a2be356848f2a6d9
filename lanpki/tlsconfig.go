package lanpki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
)

// ServerConfig is a LAN manager's: it asks for a client certificate but
// does not require one, since a master without one yet may still join with
// a token over TLS. A certificate given must verify against pool.
func ServerConfig(cert tls.Certificate, pool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
	}
}

// ClientConfig is for dialling a LAN manager whose CA is known: it checks
// the server's certificate names ServerName, whatever address was dialled,
// and presents cert when it is not nil.
func ClientConfig(pool *x509.CertPool, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		ServerName: ServerName,
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// PinnedConfig is for a master joining with a token: it trusts nothing but
// the CA whose fingerprint the token gives, taken from the end of the LAN
// manager's chain. The check is made in the handshake, so nothing (no
// secret) is sent to a LAN manager with another CA. The function returned
// gives the CA seen by the last handshake that passed the check, or nil.
func PinnedConfig(fingerprint string) (*tls.Config, func() *x509.Certificate) {
	var seen atomic.Pointer[x509.Certificate]
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: ServerName,
		// The default verification needs the CA in a pool; VerifyConnection
		// does it with the CA the fingerprint names.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			ca, err := verifyPinned(cs.PeerCertificates, fingerprint)
			if err != nil {
				return err
			}
			seen.Store(ca)
			return nil
		},
	}
	return cfg, seen.Load
}

// verifyPinned checks that the chain ends with the CA of fingerprint and
// that its leaf is a LAN manager's certificate from that CA.
func verifyPinned(chain []*x509.Certificate, fingerprint string) (*x509.Certificate, error) {
	if len(chain) < 2 {
		return nil, errors.New("the LAN manager sent no CA certificate after its own")
	}
	ca := chain[len(chain)-1]
	if got := Fingerprint(ca); got != fingerprint {
		return nil, fmt.Errorf("LAN manager's CA is %s, not the token's %s", got, fingerprint)
	}
	if err := checkIsCA(ca); err != nil {
		return nil, fmt.Errorf("LAN manager's CA: %w", err)
	}
	if err := VerifyServer(chain[:len(chain)-1], ca); err != nil {
		return nil, err
	}
	return ca, nil
}

// VerifyServer checks that chain (a leaf, then any intermediates) is a
// LAN manager's certificate from ca: it names ServerName and serves.
func VerifyServer(chain []*x509.Certificate, ca *x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("the LAN manager showed no certificate")
	}
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(ca)
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		DNSName:       ServerName,
		Roots:         roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("LAN manager's certificate: %w", err)
	}
	return nil
}
