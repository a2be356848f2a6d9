//go:build !windows

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanpki"
)

// TestLANCommands: the output of the LAN subcommands (machines, needs
// add/ls/rm, services) and of ps for a need's child, against a real
// allexlanmanager (TLS, as by default; allexctl checks its CA with the
// fingerprint the pinned token carries) and a real allexmaster that
// joined it with a master token, matches its golden file.
func TestLANCommands(t *testing.T) {
	t.Parallel()
	l := e2e.StartLAN(t, e2e.LANOpts{})
	m := e2e.StartLANMaster(t, l, e2e.MasterOpts{MachineID: "gm1", Size: 10})
	l.WaitConnected(t, 30*time.Second, "gm1")
	n := machineNormalizer(t, m, 10)
	pin, _, _ := strings.Cut(l.Token, "::")
	n.literal = append([]string{l.URL, "<lan>", l.Token, "<token>", pin, "<pin>", e2e.Bins.Master, "<allexmaster>"}, n.literal...)
	if id := l.Machines(t)["gm1"].Identity; id != "" {
		n.literal = append(n.literal, id, "<identity>")
	}
	c := func(args ...string) result {
		return ctl(t, append([]string{"-lan", l.URL, "-token", l.Token}, args...)...)
	}

	golden(t, "lan_machines", n, c("machines"))
	added := []result{
		c("needs", "add", "-module", "demo", "-protocols", "tcp,http", "n1"),
		c("needs", "add", "-module", "demo", "-fixed", "tcp=9000", "n2"),
		c("needs", "add", "-module", "demo", "-fixed", "tcp=0", "-protocols", "tcp", "n2"),
		c("needs", "add", "n3"),
		c("needs", "add", "-module", "demo", "bad name"),
		c("needs", "add", "-f", "/nonexistent/needs.json"),
	}
	l.WaitServices(t, 60*time.Second, "n1")
	waitReady(t, m, "n1")
	golden(t, "lan_needs_add", n, added...)
	golden(t, "lan_running", n, c("needs", "ls"), c("services"), c("services", "-module", "nope"),
		ctl(t, "-socket", m.Socket, "ps"), ctl(t, "-socket", m.Socket, "stop", "n1"))

	removed := c("needs", "rm", "n1")
	e2e.Eventually(t, 60*time.Second, func() error {
		if _, ok := l.Needs(t)["n1"]; ok {
			return fmt.Errorf("n1 still listed")
		}
		if len(l.Services(t)) != 0 {
			return fmt.Errorf("n1 still published")
		}
		return nil
	})
	golden(t, "lan_needs_rm", n, removed, c("needs", "ls"), c("services"), c("needs", "rm", "nope"),
		// The right CA, the wrong token: the LAN manager's 401.
		ctl(t, "-lan", l.URL, "-token", pin+"::wrong", "needs", "ls"),
		ctl(t, "-lan", "127.0.0.1:1", "-token", pin+"::t", "machines"))
}

// TestLANTLS: allexctl and a LAN manager that speaks TLS. It refuses to
// send a token over https without a CA to check (-ca, or a token that
// pins one); -ca with the LAN's CA works with the bare token, with
// another CA the handshake fails, as does a token pinning another CA;
// `machines revoke` cuts a master off, and a read token may not.
func TestLANTLS(t *testing.T) {
	t.Parallel()
	l := e2e.StartLAN(t, e2e.LANOpts{})
	m := e2e.StartLANMaster(t, l, e2e.MasterOpts{MachineID: "rv1", Size: 10})
	l.WaitConnected(t, 30*time.Second, "rv1")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	read, err := l.Client().CreateToken(ctx, "read", 0, "allexctl test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(read.Token, "K10") {
		t.Fatalf("read token %q carries no CA fingerprint", read.Token)
	}
	dir := t.TempDir()
	caFile := filepath.Join(l.Data, "tls", "ca.crt")
	other, err := lanpki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(dir, "other.crt")
	notPEM := filepath.Join(dir, "not.pem")
	for path, b := range map[string][]byte{otherCA: other.CertPEM, notPEM: []byte("not a certificate\n")} {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const root = "lan-test-token" // StartLAN's, bare
	otherPin := "K10" + strings.TrimPrefix(other.Fingerprint(), "sha256:") + "::" + root
	pin, _, _ := strings.Cut(l.Token, "::")
	hostPort := strings.TrimPrefix(l.URL, "https://")
	n := &normalizer{literal: []string{l.URL, "<lan>", hostPort, "<host:port>", read.Token, "<read-token>", l.Token, "<token>",
		otherPin, "<other-pin>::" + root, pin, "<pin>", dir, "<dir>", l.Data, "<data>",
		other.Fingerprint(), "<other-ca>", "sha256:" + strings.TrimPrefix(pin, "K10"), "<lan-ca>"}}
	lan := []string{"-lan", l.URL}

	golden(t, "lan_tls", n,
		// No CA to check the LAN manager by: refused before anything is sent.
		ctl(t, append(lan, "-token", root, "machines")...),
		ctl(t, "-lan", hostPort, "-token", root, "machines"),
		// -ca with the LAN's CA and the bare token.
		ctl(t, append(lan, "-token", root, "-ca", caFile, "needs", "ls")...),
		// Another CA, by file or by the token's fingerprint.
		ctl(t, append(lan, "-token", root, "-ca", otherCA, "needs", "ls")...),
		ctl(t, append(lan, "-token", otherPin, "needs", "ls")...),
		ctl(t, append(lan, "-token", root, "-ca", notPEM, "needs", "ls")...),
		ctl(t, append(lan, "-token", root, "-ca", filepath.Join(dir, "none.crt"), "needs", "ls")...),
		// A read token reads, and may not write.
		ctl(t, append(lan, "-token", read.Token, "needs", "ls")...),
		ctl(t, append(lan, "-token", read.Token, "needs", "add", "-module", "demo", "x")...),
	)

	// Revoking: a read token is refused; bad usage; then the admin's.
	rc := func(token string, args ...string) result {
		return ctl(t, append(append(lan, "-token", token, "machines", "revoke"), args...)...)
	}
	golden(t, "lan_revoke", n,
		rc(read.Token, "rv1"),
		rc(l.Token),
		rc(l.Token, "a", "b"),
		rc(l.Token, "-reason", "stolen", "rv1"),
	)
	e2e.Eventually(t, 30*time.Second, func() error {
		if l.Machines(t)["rv1"].Connected {
			return fmt.Errorf("rv1 still linked")
		}
		if out := m.Output(); !strings.Contains(out, "revoked: stolen") {
			return fmt.Errorf("the master's log does not say it was revoked, and why:\n%s", out)
		}
		return nil
	})
	// It stays cut off: its reconnections are refused.
	time.Sleep(2 * time.Second)
	if l.Machines(t)["rv1"].Connected {
		t.Fatalf("rv1 linked again after its revocation\n%s", m.Output())
	}
}

// TestLANInsecure: against a LAN manager run with -insecure, allexctl
// talks plain HTTP when -lan says http://, with the bare token and no
// CA; host:port means https, which that LAN manager does not speak.
func TestLANInsecure(t *testing.T) {
	t.Parallel()
	l := e2e.StartLAN(t, e2e.LANOpts{Insecure: true})
	if !strings.HasPrefix(l.URL, "http://") {
		t.Fatalf("-insecure LAN manager at %s", l.URL)
	}
	hostPort := strings.TrimPrefix(l.URL, "http://")
	n := &normalizer{literal: []string{l.URL, "<lan>", hostPort, "<host:port>", l.Token, "<token>"}}
	c := func(args ...string) result {
		return ctl(t, append([]string{"-lan", l.URL, "-token", l.Token}, args...)...)
	}
	golden(t, "lan_insecure", n,
		c("needs", "add", "-module", "demo", "i1"),
		c("needs", "ls"),
		c("machines"),
		ctl(t, "-lan", l.URL, "-token", "wrong", "machines"),
		// https (host:port) to a plain HTTP server, with a CA to check.
		ctl(t, "-lan", hostPort, "-token", "K10"+strings.Repeat("0", 64)+"::"+l.Token, "machines"),
	)
}
