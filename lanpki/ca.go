package lanpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// CA is the LAN's certificate authority.
type CA struct {
	Cert *x509.Certificate
	// Key is nil when the operator gave the CA certificate without its
	// key: the CA then only verifies, and nothing can be issued.
	Key     crypto.Signer
	CertPEM []byte
}

// errNoKey is returned by whatever needs the CA's key when it was not given.
var errNoKey = errors.New("the CA's key was not given: it cannot issue certificates")

// NewCA makes a self-signed P-256 CA valid for ten years.
func NewCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "allex LAN CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// The CA signs leaves only, never another CA.
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodePEM(pemCert, der)}, nil
}

// LoadCA loads a CA from PEM. keyPEM may be nil, for a CA that only
// verifies.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if err := checkIsCA(cert); err != nil {
		return nil, err
	}
	ca := &CA{Cert: cert, CertPEM: encodePEM(pemCert, cert.Raw)}
	if keyPEM == nil {
		return ca, nil
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !samePublicKey(key.Public(), cert.PublicKey) {
		return nil, errors.New("the CA key does not match the CA certificate")
	}
	ca.Key = key
	return ca, nil
}

func checkIsCA(cert *x509.Certificate) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return errors.New("the CA certificate is not a CA (its basic constraints lack CA:TRUE)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("the CA certificate may not sign certificates (its key usage lacks certificate signing)")
	}
	return nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// KeyPEM returns the CA's key as a PKCS#8 "PRIVATE KEY" PEM block.
func (ca *CA) KeyPEM() ([]byte, error) {
	if ca.Key == nil {
		return nil, errNoKey
	}
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	return encodePEM(pemKey, der), nil
}

// Fingerprint is Fingerprint(ca.Cert), what join tokens pin.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// Fingerprint returns "sha256:" and the lowercase hex SHA-256 of the
// certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return fingerprintPrefix + hex.EncodeToString(sum[:])
}

// Pool returns a pool holding the CA certificate alone.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// newSerial returns a random 128-bit serial number, never zero.
func newSerial() (*big.Int, error) {
	max := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(rand.Reader, max.Sub(max, big.NewInt(1)))
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}
