package lancreds

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/lanmanagertest"
	"github.com/allex-go/allex/lanpki"
)

// startLAN runs an in-process LAN manager speaking TLS with a new CA.
func startLAN(t *testing.T) (*lanmanager.Server, *lanpki.CA, string) {
	t.Helper()
	ca, err := lanpki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := lanmanagertest.Start(t, lanmanagertest.WithTLS(t, lanmanager.Config{Token: "root", CertTTL: time.Hour}, ca))
	return srv, ca, "https://" + srv.Addr().String()
}

func masterToken(t *testing.T, srv *lanmanager.Server) string {
	t.Helper()
	tok, err := srv.CreateToken(adminapi.TokenRequest{Role: adminapi.RoleMaster})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// TestJoinThenRenew: a master joins with a token, keeps its certificate
// on disk (the key 0600), loads it again without a token, and renews it
// once two thirds of its life have passed.
func TestJoinThenRenew(t *testing.T) {
	srv, _, url := startLAN(t)
	dir := filepath.Join(t.TempDir(), "lan")
	now := time.Now()
	cfg := Config{Dir: dir, MachineID: "m1", Token: masterToken(t, srv), URLs: []string{url}, Now: func() time.Time { return now }}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if wait := c.step(ctx); wait != 0 {
		t.Fatalf("join failed (next try in %v)", wait)
	}
	if err := c.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	first, _ := c.current()
	if id, _ := lanpki.MachineOf(first.Leaf); id != "m1" {
		t.Fatalf("certificate for %q", id)
	}
	if fi, err := os.Stat(filepath.Join(dir, keyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}

	cfg.Token = ""
	again, err := New(cfg)
	if err != nil {
		t.Fatalf("loading the kept certificate: %v", err)
	}
	if wait := again.step(ctx); wait <= 0 || wait > time.Hour {
		t.Fatalf("a fresh certificate is renewed in %v", wait)
	}
	now = lanpki.RenewAt(first.Leaf).Add(time.Second)
	if wait := again.step(ctx); wait != 0 {
		t.Fatalf("renewal failed (next try in %v)", wait)
	}
	renewed, _ := again.current()
	if renewed.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("renewal kept the old certificate")
	}
}

// TestJoinRefusesAnotherCA: a token naming another CA fails in the
// handshake, before the secret is sent; no certificate is held.
func TestJoinRefusesAnotherCA(t *testing.T) {
	srv, _, url := startLAN(t)
	other, err := lanpki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := lanpki.ParseToken(masterToken(t, srv))
	tok.CAHash = other.Fingerprint()
	c, err := New(Config{Dir: t.TempDir(), MachineID: "m1", Token: tok.String(), URLs: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.join(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not the token's "+other.Fingerprint()) {
		t.Fatalf("join with another CA's token: %v", err)
	}
	if cert, _ := c.current(); cert != nil {
		t.Fatal("a certificate is held")
	}
}

// TestRevokedCannotRenew: a revoked machine's renewal is refused, and a
// token without a CA pin is refused before any dial.
func TestRevokedCannotRenew(t *testing.T) {
	srv, _, url := startLAN(t)
	c, err := New(Config{Dir: t.TempDir(), MachineID: "m1", Token: masterToken(t, srv), URLs: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.join(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.RevokeMachine("m1", "test"); err != nil {
		t.Fatal(err)
	}
	cert, _ := c.current()
	if err := c.renew(context.Background(), cert); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("renewal of a revoked machine: %v", err)
	}
	tok, _ := lanpki.ParseToken(masterToken(t, srv))
	tok.CAHash = ""
	if _, err := New(Config{Dir: t.TempDir(), MachineID: "m2", Token: tok.String(), URLs: []string{url}}); err == nil || !strings.Contains(err.Error(), "no CA fingerprint") {
		t.Fatalf("token without a pin: %v", err)
	}
}

// TestExpiredJoinsAgain: a certificate that expired before a renewal got
// through (the LAN manager was away) is replaced by joining again with
// the token, which the master keeps.
func TestExpiredJoinsAgain(t *testing.T) {
	srv, _, url := startLAN(t)
	now := time.Now()
	cfg := Config{Dir: t.TempDir(), MachineID: "m1", Token: masterToken(t, srv), URLs: []string{url}, Now: func() time.Time { return now }}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.join(context.Background()); err != nil {
		t.Fatal(err)
	}
	first, _ := c.current()
	now = first.Leaf.NotAfter.Add(time.Minute)
	if wait := c.step(context.Background()); wait != 0 {
		t.Fatalf("no new certificate (next try in %v)", wait)
	}
	if got, _ := c.current(); got.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("kept the expired certificate")
	}
}
