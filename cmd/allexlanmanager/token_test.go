package main

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanpki"
)

// TestTokenWithoutLANManager: the token commands talk to a running LAN
// manager; without one, or without its token and CA, they say so.
func TestTokenWithoutLANManager(t *testing.T) {
	// A data dir as a LAN manager leaves it, and a port nothing listens on.
	data := t.TempDir()
	ca, err := lanpki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(data, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"token": []byte("tok\n"), "tls/ca.crt": ca.CertPEM} {
		if err := os.WriteFile(filepath.Join(data, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + ln.Addr().String()
	ln.Close()
	empty := t.TempDir()

	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"nothing listening", []string{"token", "create", "-lan", down, "-data", data},
			[]string{down + "/v1/tokens", "connection refused"}},
		{"ls, nothing listening", []string{"token", "ls", "-lan", down, "-data", data},
			[]string{down + "/v1/tokens", "connection refused"}},
		{"no token in the data dir", []string{"token", "create", "-lan", down, "-data", empty},
			[]string{"admin token:", filepath.Join(empty, "token"), "no such file"}},
		{"no CA in the data dir", []string{"token", "create", "-lan", down, "-data", empty, "-token-file", filepath.Join(data, "token")},
			[]string{"CA:", filepath.Join(empty, "tls", "ca.crt"), "no such file"}},
		{"a CA file that holds none", []string{"token", "create", "-lan", down, "-data", data, "-ca", filepath.Join(data, "token")},
			[]string{"no PEM certificate"}},
		{"no verb", []string{"token"}, []string{"token: want create, ls or revoke", "usage: allexlanmanager token create"}},
		{"a flag for a verb", []string{"token", "-role", "read"}, []string{"token: want create, ls or revoke"}},
		{"unknown verb", []string{"token", "frob", "-lan", down, "-data", data}, []string{`token frob: unexpected arguments []`}},
		{"revoke without an id", []string{"token", "revoke", "-lan", down, "-data", data}, []string{"token revoke: unexpected arguments []"}},
		{"create with an argument", []string{"token", "create", "-lan", down, "-data", data, "x"}, []string{`token create: unexpected arguments ["x"]`}},
		{"negative ttl", []string{"token", "create", "-lan", down, "-data", data, "-ttl", "-1h"}, []string{"-ttl -1h0m0s: want 0 (never) or more"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runHelper(t, tt.args...)
			if code != 1 || stdout != "" {
				t.Fatalf("exit %d, stdout %q, want 1 and nothing\nstderr: %s", code, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestTokenCommands: token create prints a token pinning the LAN's CA,
// which works for its role; -role bogus gets the LAN manager's 400;
// token ls lists what was made (no secrets); token revoke removes one,
// which is refused from then on.
func TestTokenCommands(t *testing.T) {
	data := filepath.Join(t.TempDir(), "d")
	cmd, addr, exited := startProcess(t, "-addr", "127.0.0.1:0", "-data", data)
	base := "https://" + addr
	tok := func(args ...string) (string, string, int) {
		return runHelper(t, append(append([]string{"token"}, args[0], "-lan", base, "-data", data), args[1:]...)...)
	}
	stdout, stderr, code := tok("create", "-role", "bogus")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "400") || !strings.Contains(stderr, `role "bogus": want master, admin or read`) {
		t.Fatalf("create -role bogus: exit %d, stdout %q, stderr %q; want 1 and the LAN manager's 400", code, stdout, stderr)
	}

	caPEM := mustRead(t, filepath.Join(data, "tls", "ca.crt"))
	ca, err := lanpki.ParseCertPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	made := map[string]lanpki.Token{}
	for _, role := range []string{"read", "master"} {
		stdout, stderr, code := tok("create", "-role", role, "-ttl", "1h", "-description", "made-by-test-"+role)
		if code != 0 {
			t.Fatalf("create -role %s: exit %d: %s", role, code, stderr)
		}
		parsed, err := lanpki.ParseToken(stdout)
		if err != nil || !strings.HasSuffix(stdout, "\n") || strings.Count(stdout, "\n") != 1 {
			t.Fatalf("create -role %s printed %q (%v), want one token line", role, stdout, err)
		}
		if parsed.CAHash != lanpki.Fingerprint(ca) {
			t.Fatalf("the %s token pins %s, not the LAN's CA %s", role, parsed.CAHash, lanpki.Fingerprint(ca))
		}
		made[role] = parsed
	}
	// Each for its role: read reads, master does not.
	client := httpsClient(t, filepath.Join(data, "tls", "ca.crt"))
	if resp, body := call(t, client, "GET", base+"/v1/needs", made["read"].Bearer(), ""); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/needs with the read token: %s %s", resp.Status, body)
	}
	if resp, body := call(t, client, "GET", base+"/v1/needs", made["master"].Bearer(), ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET /v1/needs with the master token: %s %s, want 403", resp.Status, body)
	}

	stdout, stderr, code = tok("ls")
	if code != 0 {
		t.Fatalf("ls: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "ROLE") {
		t.Fatalf("ls printed:\n%s\nwant a header and two tokens", stdout)
	}
	for role, p := range made {
		if !strings.Contains(stdout, p.ID) || !strings.Contains(stdout, "made-by-test-"+role) {
			t.Errorf("ls lacks the %s token %s:\n%s", role, p.ID, stdout)
		}
		if strings.Contains(stdout, p.Secret) {
			t.Errorf("ls shows the %s token's secret:\n%s", role, stdout)
		}
	}

	if stdout, stderr, code := tok("revoke", made["read"].ID); code != 0 || stdout != "" {
		t.Fatalf("revoke %s: exit %d, stdout %q, stderr %s", made["read"].ID, code, stdout, stderr)
	}
	stdout, _, _ = tok("ls")
	if strings.Contains(stdout, made["read"].ID) || !strings.Contains(stdout, made["master"].ID) {
		t.Errorf("ls after revoking the read token %s:\n%s", made["read"].ID, stdout)
	}
	if resp, body := call(t, client, "GET", base+"/v1/needs", made["read"].Bearer(), ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/needs with the revoked read token: %s %s, want 401", resp.Status, body)
	}
	if _, stderr, code := tok("revoke", made["read"].ID); code != 1 || !strings.Contains(stderr, "404") {
		t.Errorf("revoking %s again: exit %d, %s; want 1 and 404", made["read"].ID, code, stderr)
	}
	stop(t, cmd, exited)
}
