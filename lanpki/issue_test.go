package lanpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func signTestMaster(t *testing.T, ca *CA, machineID string, now time.Time, ttl time.Duration) (certPEM, keyPEM []byte) {
	t.Helper()
	keyPEM, csrPEM, err := NewMasterKey(machineID)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = ca.SignMaster(csrPEM, machineID, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func verifyAt(cert *x509.Certificate, ca *CA, now time.Time, usage x509.ExtKeyUsage, dnsName string) error {
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:       ca.Pool(),
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{usage},
		DNSName:     dnsName,
	})
	return err
}

func TestSignMaster(t *testing.T) {
	ca := newTestCA(t, t0)
	now := t0.Add(24 * time.Hour)
	certPEM, keyPEM := signTestMaster(t, ca, "m-42", now, 30*24*time.Hour)
	pair, err := LoadKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert := pair.Leaf
	if err := verifyAt(cert, ca, now, x509.ExtKeyUsageClientAuth, ""); err != nil {
		t.Errorf("master cert does not verify for client auth: %v", err)
	}
	if err := verifyAt(cert, ca, now, x509.ExtKeyUsageServerAuth, ""); err == nil {
		t.Error("master cert verifies for server auth")
	}
	if id, ok := MachineOf(cert); !ok || id != "m-42" {
		t.Errorf("MachineOf = %q, %v", id, ok)
	}
	if IsLANManager(cert) {
		t.Error("master cert is a LAN manager's")
	}
	if !cert.NotBefore.Equal(now.Add(-time.Hour)) || !cert.NotAfter.Equal(now.Add(30*24*time.Hour)) {
		t.Errorf("valid %v to %v", cert.NotBefore, cert.NotAfter)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature || cert.IsCA {
		t.Errorf("KeyUsage %v IsCA %v", cert.KeyUsage, cert.IsCA)
	}
}

// The certificate says what SignMaster decides, whatever the CSR asks.
func TestSignMasterIgnoresCSRExtensions(t *testing.T) {
	ca := newTestCA(t, t0)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "m-1"},
		DNSNames:    []string{ServerName},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.1")},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignMaster(encodePEM(pemCSR, der), "m-1", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 || IsLANManager(cert) {
		t.Errorf("cert took the CSR's SANs: %v %v", cert.DNSNames, cert.IPAddresses)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage %v", cert.ExtKeyUsage)
	}
}

func TestSignMasterRefuses(t *testing.T) {
	ca := newTestCA(t, t0)
	_, csrPEM, err := NewMasterKey("m-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.SignMaster(csrPEM, "m-2", t0, time.Hour); err == nil || err.Error() != `CSR names machine "m-1", not "m-2"` {
		t.Errorf("CSR for another machine: %v", err)
	}
	block, err := firstBlock(csrPEM, pemCSR)
	if err != nil {
		t.Fatal(err)
	}
	block.Bytes[len(block.Bytes)-1] ^= 1 // in the signature, the DER's last field
	if _, err := ca.SignMaster(encodePEM(pemCSR, block.Bytes), "m-1", t0, time.Hour); err == nil || !strings.Contains(err.Error(), "CSR") {
		t.Errorf("tampered CSR: %v", err)
	}
	if _, err := ca.SignMaster(csrPEM, "m-1", t0, 0); err == nil {
		t.Error("zero ttl accepted")
	}
	if _, err := ca.SignMaster(csrPEM, "m-1", t0.AddDate(11, 0, 0), time.Hour); err == nil {
		t.Error("signed after the CA expired")
	}
}

func TestIssueServer(t *testing.T) {
	ca := newTestCA(t, t0)
	cert, err := ca.IssueServer([]string{"lm1.example", "10.0.0.5", "[::1]", "lm1.example", " ", ServerName}, t0, 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if len(cert.Certificate) != 2 || string(cert.Certificate[0]) != string(leaf.Raw) || string(cert.Certificate[1]) != string(ca.Cert.Raw) {
		t.Fatal("chain is not [leaf, CA]")
	}
	if leaf.Subject.CommonName != "lanmanager" {
		t.Errorf("CN %q", leaf.Subject.CommonName)
	}
	if want := []string{ServerName, "lm1.example"}; !slices.Equal(leaf.DNSNames, want) {
		t.Errorf("DNSNames %v, want %v", leaf.DNSNames, want)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.5")) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses %v", leaf.IPAddresses)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := verifyAt(leaf, ca, t0, usage, ServerName); err != nil {
			t.Errorf("verify for %v: %v", usage, err)
		}
	}
	if !IsLANManager(leaf) {
		t.Error("IsLANManager false")
	}
	if id, ok := MachineOf(leaf); ok {
		t.Errorf("server cert is a master's, machine %q", id)
	}
	// Backdated by an hour, but not before the CA itself.
	if !leaf.NotBefore.Equal(ca.Cert.NotBefore) || !leaf.NotAfter.Equal(t0.Add(90*24*time.Hour)) {
		t.Errorf("valid %v to %v", leaf.NotBefore, leaf.NotAfter)
	}
}

func TestIssueWithinCA(t *testing.T) {
	ca := newTestCA(t, t0)
	cert, err := ca.IssueServer(nil, t0.AddDate(9, 11, 0), 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Leaf.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("leaf ends %v, after the CA's %v", cert.Leaf.NotAfter, ca.Cert.NotAfter)
	}
}

func TestRenewAt(t *testing.T) {
	ca := newTestCA(t, t0)
	cert, err := ca.IssueServer(nil, t0.Add(24*time.Hour), 89*time.Hour) // valid 90 hours from an hour back
	if err != nil {
		t.Fatal(err)
	}
	if got, want := RenewAt(cert.Leaf), t0.Add(23*time.Hour+60*time.Hour); !got.Equal(want) {
		t.Errorf("RenewAt = %v, want %v", got, want)
	}
}

func TestParseCertPEMSkipsOtherBlocks(t *testing.T) {
	ca := newTestCA(t, t0)
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertPEM(append(keyPEM, ca.CertPEM...))
	if err != nil || !cert.Equal(ca.Cert) {
		t.Errorf("ParseCertPEM = %v", err)
	}
}
