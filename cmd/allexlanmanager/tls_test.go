package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanpki"
)

// httpsClient trusts the CA in caFile alone, and checks the LAN
// manager's name as masters and allexctl do.
func httpsClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s: no certificate", caFile)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: lanpki.ClientConfig(pool, nil)}}
}

// call makes one request with a bearer token (none if "") and returns
// the response with its body read.
func call(t *testing.T, c *http.Client, method, url, token, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, string(b)
}

// runHelper runs allexlanmanager with args to its end (the token
// subcommand) and returns what it printed and its exit code.
func runHelper(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, "\n"))
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("allexlanmanager %q: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

func stop(t *testing.T, cmd *exec.Cmd, exited chan error) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}

// TestProcessInsecure: with -insecure the LAN manager answers plain HTTP,
// makes no CA, and a TLS client gets no handshake.
func TestProcessInsecure(t *testing.T) {
	data := filepath.Join(t.TempDir(), "d")
	cmd, addr, exited := startProcess(t, "-addr", "127.0.0.1:0", "-data", data, "-token", "tok", "-insecure")
	resp, body := call(t, http.DefaultClient, "GET", "http://"+addr+"/v1/needs", "tok", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/needs over plain HTTP: %s %s", resp.Status, body)
	}
	if _, err := os.Stat(filepath.Join(data, "tls")); !os.IsNotExist(err) {
		t.Errorf("-insecure made %s/tls: %v", data, err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: lanpki.ClientConfig(x509.NewCertPool(), nil)}}
	if resp, err := c.Get("https://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("HTTPS to an -insecure LAN manager answered %s", resp.Status)
	}
	// Its tokens pin no CA, and it issues no certificates: a master
	// there links with the LAN's token.
	resp, body = call(t, http.DefaultClient, "POST", "http://"+addr+"/v1/tokens", "tok", `{"role":"master"}`)
	var made adminapi.CreatedToken
	if resp.StatusCode != http.StatusCreated || json.Unmarshal([]byte(body), &made) != nil {
		t.Fatalf("POST /v1/tokens: %s %s", resp.Status, body)
	}
	tok, err := lanpki.ParseToken(made.Token)
	if err != nil || tok.CAHash != "" {
		t.Fatalf("a token made over plain HTTP: %q (%v), want one without a CA fingerprint", made.Token, err)
	}
	resp, body = call(t, http.DefaultClient, "POST", "http://"+addr+"/v1/join", tok.Bearer(), `{"machine":"m1","csr":""}`)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "plain HTTP") {
		t.Errorf("POST /v1/join over plain HTTP: %s %s, want 403", resp.Status, body)
	}
	stop(t, cmd, exited)
}

// writeOperatorFiles writes, in dir, a CA made outside the LAN manager
// (ca.crt, ca.key) and a server certificate it signed (lm.crt, lm.key),
// and a certificate from another CA (other.crt, other.key).
func writeOperatorFiles(t *testing.T, dir string) {
	t.Helper()
	now := time.Now()
	ca, err := lanpki.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := lanpki.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"ca.crt": ca.CertPEM, "ca.key": caKey}
	for name, c := range map[string]*lanpki.CA{"lm": ca, "other": other} {
		cert, err := c.IssueServer([]string{"127.0.0.1"}, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		files[name+".crt"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		files[name+".key"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOperatorTLSFiles: -tls-cert, -tls-key and -tls-ca serve with the
// operator's certificate and make no CA in -data; without -tls-ca-key
// masters cannot join (403), with it they can. A certificate from
// another CA, or one that is not a LAN manager's, is refused at start.
func TestOperatorTLSFiles(t *testing.T) {
	dir := t.TempDir()
	writeOperatorFiles(t, dir)
	f := func(name string) string { return filepath.Join(dir, name) }
	client := httpsClient(t, f("ca.crt"))
	_, csrPEM, err := lanpki.NewMasterKey("m1")
	if err != nil {
		t.Fatal(err)
	}
	join, _ := json.Marshal(adminapi.JoinRequest{Machine: "m1", CSR: string(csrPEM)})

	for _, withKey := range []bool{false, true} {
		data := filepath.Join(t.TempDir(), "d")
		args := []string{"-addr", "127.0.0.1:0", "-data", data, "-token", "tok", "-tls-cert", f("lm.crt"), "-tls-key", f("lm.key"), "-tls-ca", f("ca.crt")}
		if withKey {
			args = append(args, "-tls-ca-key", f("ca.key"))
		}
		cmd, addr, exited := startProcess(t, args...)
		base := "https://" + addr
		if resp, body := call(t, client, "GET", base+"/v1/needs", "tok", ""); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/needs: %s %s", resp.Status, body)
		}
		if _, err := os.Stat(filepath.Join(data, "tls")); !os.IsNotExist(err) {
			t.Errorf("with -tls-cert the LAN manager made %s/tls: %v", data, err)
		}
		resp, body := call(t, client, "POST", base+"/v1/tokens", "tok", `{"role":"master"}`)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST /v1/tokens: %s %s", resp.Status, body)
		}
		var made adminapi.CreatedToken
		if err := json.Unmarshal([]byte(body), &made); err != nil {
			t.Fatal(err)
		}
		tok, err := lanpki.ParseToken(made.Token)
		if err != nil {
			t.Fatalf("token %q: %v", made.Token, err)
		}
		ca, _ := lanpki.ParseCertPEM(mustRead(t, f("ca.crt")))
		if tok.CAHash != lanpki.Fingerprint(ca) {
			t.Errorf("the token pins %s, not the operator's CA %s", tok.CAHash, lanpki.Fingerprint(ca))
		}
		resp, body = call(t, client, "POST", base+"/v1/join", tok.Bearer(), string(join))
		switch {
		case !withKey && (resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "no CA key")):
			t.Errorf("join without -tls-ca-key: %s %s, want 403 (no CA key)", resp.Status, body)
		case withKey && resp.StatusCode != http.StatusOK:
			t.Errorf("join with -tls-ca-key: %s %s, want 200", resp.Status, body)
		}
		stop(t, cmd, exited)
	}

	for _, tt := range []struct {
		name string
		args []string
		err  string
	}{
		{"another CA's certificate", []string{"-tls-cert", f("other.crt"), "-tls-key", f("other.key"), "-tls-ca", f("ca.crt")}, "-tls-cert is not signed by -tls-ca"},
		{"a key that is not the certificate's", []string{"-tls-cert", f("lm.crt"), "-tls-key", f("other.key"), "-tls-ca", f("ca.crt")}, "-tls-cert, -tls-key"},
		{"a CA that is no CA", []string{"-tls-cert", f("lm.crt"), "-tls-key", f("lm.key"), "-tls-ca", f("lm.crt")}, "-tls-ca"},
		{"the CA as the server's certificate", []string{"-tls-cert", f("ca.crt"), "-tls-key", f("ca.key"), "-tls-ca", f("ca.crt")}, "want a server certificate carrying the DNS name " + lanpki.ServerName},
		{"missing certificate", []string{"-tls-cert", f("nope.crt"), "-tls-key", f("lm.key"), "-tls-ca", f("ca.crt")}, "-tls-cert: open"},
		{"missing CA key", []string{"-tls-cert", f("lm.crt"), "-tls-key", f("lm.key"), "-tls-ca", f("ca.crt"), "-tls-ca-key", f("nope.key")}, "-tls-ca-key: open"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-addr", "127.0.0.1:0", "-data", filepath.Join(t.TempDir(), "d"), "-token", "tok"}, tt.args...)
			err := run(context.Background(), args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
