package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/lanpki"
)

const helperEnv = "ALLEXLANMANAGER_TEST_ARGS"

// TestHelperProcess is the real allexlanmanager when re-executed by a test.
func TestHelperProcess(t *testing.T) {
	args := os.Getenv(helperEnv)
	if args == "" {
		t.Skip("helper process only")
	}
	os.Args = append([]string{"allexlanmanager"}, strings.Split(args, "\n")...)
	main()
	os.Exit(0)
}

var addrRE = regexp.MustCompile(`LAN manager listening: addr=(\S+)`)

// startProcess runs the command as a child and returns its listen address.
func startProcess(t *testing.T, args ...string) (*exec.Cmd, string, chan error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, "\n"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case a := <-addr:
		return cmd, a, exited
	case err := <-exited:
		t.Fatalf("allexlanmanager exited before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("allexlanmanager did not listen")
	}
	return nil, "", nil
}

// TestProcessTokenAndSignal: a fresh data dir gets a token (0600) and
// the LAN's CA (tls/ca.crt 0644, tls/ca.key 0600), both kept on restart;
// the admin API answers over HTTPS with a certificate from that CA, and
// plain HTTP to the port is refused; SIGTERM ends the process cleanly.
func TestProcessTokenAndSignal(t *testing.T) {
	data := filepath.Join(t.TempDir(), "d")
	var token, caPEM string
	for round := range 2 {
		cmd, addr, exited := startProcess(t, "-addr", "127.0.0.1:0", "-data", data, "-heartbeat", "1s", "-log-level", "debug")
		for name, want := range map[string]os.FileMode{"token": 0o600, "tls/ca.crt": 0o644, "tls/ca.key": 0o600} {
			fi, err := os.Stat(filepath.Join(data, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
			}
		}
		b, err := os.ReadFile(filepath.Join(data, "token"))
		if err != nil {
			t.Fatal(err)
		}
		tok := strings.TrimSpace(string(b))
		if round == 1 && tok != token {
			t.Fatal("token not reused on restart")
		}
		token = tok
		ca, err := os.ReadFile(filepath.Join(data, "tls", "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		if round == 1 && string(ca) != caPEM {
			t.Fatal("CA not reused on restart")
		}
		caPEM = string(ca)
		resp, body := call(t, httpsClient(t, filepath.Join(data, "tls", "ca.crt")), "GET", "https://"+addr+"/v1/needs", token, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/needs over HTTPS: %s %s", resp.Status, body)
		}
		if len(resp.TLS.PeerCertificates) == 0 || !lanpki.IsLANManager(resp.TLS.PeerCertificates[0]) {
			t.Fatalf("GET /v1/needs: not answered with a LAN manager's certificate: %+v", resp.TLS)
		}
		// Plain HTTP to the TLS port: Go's server says what went wrong.
		resp, body = call(t, http.DefaultClient, "GET", "http://"+addr+"/v1/needs", token, "")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Client sent an HTTP request to an HTTPS server") {
			t.Fatalf("GET /v1/needs over plain HTTP: %s %q, want 400 and \"Client sent an HTTP request to an HTTPS server\"", resp.Status, body)
		}
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
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	badNeeds := filepath.Join(dir, "needs.json")
	if err := os.WriteFile(badNeeds, []byte(`{"needs":[{"instance":"a"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		err  string
	}{
		{"unknown flag", []string{"-nope"}, "not defined"},
		{"extra arg", []string{"x"}, "unexpected"},
		{"bad level", []string{"-log-level", "loud"}, "log-level"},
		{"bad store", []string{"-store", "s3"}, "-store"},
		{"two tokens", []string{"-token", "a", "-token-file", empty}, "not both"},
		{"empty token file", []string{"-token-file", empty}, "empty"},
		{"missing token file", []string{"-token-file", filepath.Join(dir, "nope")}, "token-file"},
		{"negative lease", []string{"-lease", "-1s"}, "want more than 0"},
		{"old -grace", []string{"-grace", "5s"}, "flag provided but not defined"},
		{"fence grace beyond lease", []string{"-lease", "2s", "-fence-grace", "3s"}, "fence grace"},
		{"bad needs", []string{"-token", "a", "-needs", badNeeds}, "needs.json"},
		{"zero per-IP cap", []string{"-max-unauth-per-ip", "0"}, "-max-unauth-per-ip 0: want at least 1"},
		{"negative total cap", []string{"-max-unauth", "-5"}, "-max-unauth -5: want at least 1"},
		{"zero unauth timeout", []string{"-unauth-timeout", "0s"}, "-unauth-timeout 0s: want more than 0"},
		{"negative hello timeout", []string{"-hello-timeout", "-1s"}, "-hello-timeout -1s: want more than 0"},
		{"zero placing cap", []string{"-max-placing", "0"}, "-max-placing 0: want at least 1, or -1 for no limit"},
		{"negative placing cap", []string{"-max-placing", "-2"}, "-max-placing -2: want at least 1"},
		{"zero decline hold", []string{"-decline-hold", "0s"}, "-decline-hold 0s: want more than 0"},
		{"etcd store without a token", []string{"-store", "etcd://127.0.0.1:2379"}, "-store etcd: give -token or -token-file"},
		{"etcd store without endpoints", []string{"-token", "a", "-store", "etcd:///allex"}, "want etcd://host:port"},
		{"etcd endpoint without a port", []string{"-token", "a", "-store", "etcd://a:1,b/allex"}, `endpoint "b": want host:port`},
		{"etcd store with a query", []string{"-token", "a", "-store", "etcd://a:1/allex?x=1"}, "want etcd://host:port"},
		{"short leader ttl", []string{"-token", "a", "-store", "etcd://a:1", "-leader-ttl", "500ms"}, "-leader-ttl 500ms: want at least 1s"},
		{"bad addr", []string{"-token", "a", "-addr", "nope"}, "addr"},
		{"insecure with a certificate", []string{"-insecure", "-tls-cert", empty, "-tls-key", empty, "-tls-ca", empty}, "-insecure serves plain HTTP: give no -tls-* flags with it"},
		{"insecure with a CA key", []string{"-insecure", "-tls-ca-key", empty}, "give no -tls-* flags"},
		{"certificate without its CA", []string{"-tls-cert", empty, "-tls-key", empty}, "-tls-cert, -tls-key and -tls-ca go together"},
		{"certificate without its key", []string{"-tls-cert", empty, "-tls-ca", empty}, "go together"},
		{"CA key alone", []string{"-tls-ca-key", empty}, "go together"},
		{"short cert ttl", []string{"-cert-ttl", "1s"}, "-cert-ttl 1s: want at least 1m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-data", filepath.Join(t.TempDir(), "d")}, tt.args...)
			err := run(context.Background(), args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestParseEtcdStore(t *testing.T) {
	for in, want := range map[string]etcdStore{
		"etcd://a:2379":                  {endpoints: []string{"http://a:2379"}, prefix: "/allex"},
		"etcd://a:1,b:2/lan1":            {endpoints: []string{"http://a:1", "http://b:2"}, prefix: "/lan1"},
		"etcd://127.0.0.1:2379/x/y/":     {endpoints: []string{"http://127.0.0.1:2379"}, prefix: "/x/y"},
		"etcd://[::1]:2379,[::1]:2380/p": {endpoints: []string{"http://[::1]:2379", "http://[::1]:2380"}, prefix: "/p"},
	} {
		got, err := parseEtcdStore(in)
		if err != nil || !slices.Equal(got.endpoints, want.endpoints) || got.prefix != want.prefix {
			t.Errorf("%s: %+v, %v; want %+v", in, got, err, want)
		}
	}
}
