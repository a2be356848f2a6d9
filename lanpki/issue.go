package lanpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// ServerName is the DNS name in every LAN manager certificate. Clients
// verify it, not the address they dialled (as Nomad's
// server.<region>.nomad), so a LAN manager is reachable by any address and
// a master certificate (which never carries it) cannot pose as a LAN
// manager.
const ServerName = "lanmanager.allex"

// backdate lets certificates be valid at once on machines whose clocks lag
// the issuer's.
const backdate = time.Hour

// IssueServer makes a LAN manager's certificate for a new P-256 key. It
// names ServerName and every host given (names as DNS names, addresses as
// IP addresses), and serves as client too: LAN managers relay links to
// each other. The chain carries the CA after the leaf, for clients that
// pin the CA.
func (ca *CA) IssueServer(hosts []string, now time.Time, ttl time.Duration) (tls.Certificate, error) {
	tmpl, err := ca.leafTemplate("lanmanager", now, ttl)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl.DNSNames, tmpl.IPAddresses = serverSANs(hosts)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := ca.sign(tmpl, key.Public())
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{
		Certificate: [][]byte{leaf.Raw, ca.Cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// serverSANs sorts hosts into DNS names and IP addresses, ServerName first.
func serverSANs(hosts []string) ([]string, []net.IP) {
	names := []string{ServerName}
	var ips []net.IP
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(h), "["), "]")
		if addr, err := netip.ParseAddr(h); err == nil {
			ip := net.IP(addr.WithZone("").Unmap().AsSlice())
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		} else if h != "" && !slices.Contains(names, h) {
			names = append(names, h)
		}
	}
	return names, ips
}

// NewMasterKey makes a master's P-256 key and a CSR naming machineID, both
// PEM: the key stays on the master, the CSR goes to the LAN manager.
func NewMasterKey(machineID string) (keyPEM, csrPEM []byte, err error) {
	if machineID == "" {
		return nil, nil, errors.New("no machine id")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: machineID}}, key)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodePEM(pemKey, der), encodePEM(pemCSR, csr), nil
}

// SignMaster issues a master's certificate for the key of csrPEM, which
// must name machineID. Only the CSR's key is taken: what the certificate
// says is decided here, so a master cannot ask for SANs or other uses.
func (ca *CA) SignMaster(csrPEM []byte, machineID string, now time.Time, ttl time.Duration) ([]byte, error) {
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if machineID == "" {
		return nil, errors.New("no machine id")
	}
	if cn := csr.Subject.CommonName; cn != machineID {
		return nil, fmt.Errorf("CSR names machine %q, not %q", cn, machineID)
	}
	tmpl, err := ca.leafTemplate(machineID, now, ttl)
	if err != nil {
		return nil, err
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	cert, err := ca.sign(tmpl, csr.PublicKey)
	if err != nil {
		return nil, err
	}
	return encodePEM(pemCert, cert.Raw), nil
}

func parseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, err := firstBlock(csrPEM, pemCSR, "NEW CERTIFICATE REQUEST")
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	return csr, nil
}

// leafTemplate is what every certificate the CA issues shares: valid from
// an hour ago until ttl from now, within the CA's own validity.
func (ca *CA) leafTemplate(cn string, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	if ca.Key == nil {
		return nil, errNoKey
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("certificate lifetime %v is not positive", ttl)
	}
	notBefore := latest(now.Add(-backdate), ca.Cert.NotBefore)
	notAfter := earliest(now.Add(ttl), ca.Cert.NotAfter)
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("the CA is valid from %s to %s, not at %s",
			ca.Cert.NotBefore.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}, nil
}

func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// MachineOf returns the machine id a master certificate names: its CN, when
// it is a client certificate and not a server one.
func MachineOf(cert *x509.Certificate) (string, bool) {
	cn := cert.Subject.CommonName
	if cn == "" || !hasUsage(cert, x509.ExtKeyUsageClientAuth) || hasUsage(cert, x509.ExtKeyUsageServerAuth) {
		return "", false
	}
	return cn, true
}

// IsLANManager says whether cert is a LAN manager's: it names ServerName
// and may serve.
func IsLANManager(cert *x509.Certificate) bool {
	return slices.Contains(cert.DNSNames, ServerName) && hasUsage(cert, x509.ExtKeyUsageServerAuth)
}

func hasUsage(cert *x509.Certificate, u x509.ExtKeyUsage) bool {
	return slices.Contains(cert.ExtKeyUsage, u)
}

// RenewAt is when cert should be renewed: two thirds into its validity,
// leaving a third of it for retries.
func RenewAt(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotAfter.Add(-life / 3)
}
