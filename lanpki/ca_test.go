package lanpki

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

func newTestCA(t *testing.T, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	ca := newTestCA(t, t0)
	c := ca.Cert
	if c.Subject.CommonName != "allex LAN CA" || !c.IsCA || !c.MaxPathLenZero || c.MaxPathLen != 0 {
		t.Errorf("CA cert: CN %q IsCA %v MaxPathLen %d/%v", c.Subject.CommonName, c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if !c.NotBefore.Equal(t0.Add(-time.Hour)) || !c.NotAfter.Equal(t0.AddDate(10, 0, 0)) {
		t.Errorf("CA valid %v to %v", c.NotBefore, c.NotAfter)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v", c.SerialNumber)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if fp := ca.Fingerprint(); !strings.HasPrefix(fp, "sha256:") || len(fp) != 7+64 || strings.ToLower(fp) != fp {
		t.Errorf("fingerprint %q", fp)
	}
}

func TestLoadCARoundTrip(t *testing.T) {
	ca := newTestCA(t, t0)
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(keyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("key PEM is not PKCS#8:\n%s", keyPEM)
	}
	got, err := LoadCA(ca.CertPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint() != ca.Fingerprint() || !bytes.Equal(got.CertPEM, ca.CertPEM) {
		t.Error("loaded CA differs")
	}
	if _, err := got.IssueServer(nil, t0, time.Hour); err != nil {
		t.Errorf("loaded CA cannot issue: %v", err)
	}
}

func TestLoadCAWithoutKey(t *testing.T) {
	ca := newTestCA(t, t0)
	got, err := LoadCA(ca.CertPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != nil {
		t.Fatal("key set")
	}
	if _, err := got.IssueServer(nil, t0, time.Hour); err == nil || !strings.Contains(err.Error(), "key") {
		t.Errorf("IssueServer without key: %v", err)
	}
	if _, err := got.KeyPEM(); err == nil {
		t.Error("KeyPEM without key succeeded")
	}
}

func TestLoadCAErrors(t *testing.T) {
	ca, other := newTestCA(t, t0), newTestCA(t, t0)
	otherKey, err := other.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.IssueServer(nil, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name             string
		certPEM, keyPEM  []byte
		wantErrSubstring string
	}{
		{"mismatched key", ca.CertPEM, otherKey, "does not match"},
		{"not a CA", encodePEM(pemCert, server.Leaf.Raw), nil, "not a CA"},
		{"no cert", []byte("junk"), nil, "no CERTIFICATE"},
		{"empty key", ca.CertPEM, []byte{}, "no PRIVATE KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadCA(tt.certPEM, tt.keyPEM)
			if err == nil || !strings.Contains(err.Error(), tt.wantErrSubstring) {
				t.Errorf("LoadCA = %v, want an error containing %q", err, tt.wantErrSubstring)
			}
		})
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, created, err := LoadOrCreateCA(dir, t0)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateCA = %v, %v", created, err)
	}
	again, created, err := LoadOrCreateCA(dir, t0.Add(time.Hour))
	if err != nil || created {
		t.Fatalf("second LoadOrCreateCA = %v, %v", created, err)
	}
	if again.Fingerprint() != ca.Fingerprint() || again.Key == nil {
		t.Error("second call returned another CA")
	}
	if runtime.GOOS == "windows" {
		return
	}
	for name, want := range map[string]os.FileMode{"": 0o700, caKeyFile: 0o600, caCertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%q mode %v, want %v", name, got, want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("dir holds %d entries, want ca.crt and ca.key alone", len(entries))
	}
}

func TestLoadOrCreateCAHalf(t *testing.T) {
	ca := newTestCA(t, t0)
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		have    string
		data    []byte
		missing string
	}{
		{caCertFile, ca.CertPEM, caKeyFile},
		{caKeyFile, keyPEM, caCertFile},
	} {
		t.Run("only "+tt.have, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tt.have), tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreateCA(dir, t0)
			if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, tt.missing)+" does not") {
				t.Errorf("LoadOrCreateCA = %v, want an error naming %s", err, tt.missing)
			}
		})
	}
}

// Processes starting at once end up with one CA, made by one of them.
func TestLoadOrCreateCAConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	const n = 8
	cas := make([]*CA, n)
	createds := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { cas[i], createds[i], errs[i] = LoadOrCreateCA(dir, t0) })
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if createds[i] {
			creators++
		}
		if cas[i].Fingerprint() != cas[0].Fingerprint() {
			t.Errorf("call %d got another CA", i)
		}
	}
	if creators != 1 {
		t.Errorf("%d calls created the CA, want 1", creators)
	}
}
