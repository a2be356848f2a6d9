package lanpki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"
)

// serverResult is what the server side of a connection saw.
type serverResult struct {
	state        tls.ConnectionState
	handshakeErr error
	read         int   // bytes read after the handshake
	readErr      error // from that read
}

// dial makes one TLS connection over loopback TCP: the server side
// handshakes and reads once, the client side handshakes, writes "hello"
// when that succeeded, and closes.
func dial(t *testing.T, serverCfg, clientCfg *tls.Config) (serverResult, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	results := make(chan serverResult, 1)
	go func() {
		var r serverResult
		defer func() { results <- r }()
		conn, err := ln.Accept()
		if err != nil {
			r.handshakeErr = err
			return
		}
		defer conn.Close()
		sc := tls.Server(conn, serverCfg)
		r.handshakeErr = sc.Handshake()
		r.state = sc.ConnectionState()
		buf := make([]byte, 64)
		r.read, r.readErr = sc.Read(buf)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := tls.Client(conn, clientCfg)
	clientErr := cc.Handshake()
	if clientErr == nil {
		_, clientErr = cc.Write([]byte("hello"))
	}
	cc.Close()
	return <-results, clientErr
}

// lanManager is a LAN manager's TLS configuration with a fresh certificate.
func lanManager(t *testing.T, ca *CA) *tls.Config {
	t.Helper()
	cert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ServerConfig(cert, ca.Pool())
}

func masterCert(t *testing.T, ca *CA, machineID string, now time.Time, ttl time.Duration) *tls.Certificate {
	t.Helper()
	certPEM, keyPEM := signTestMaster(t, ca, machineID, now, ttl)
	cert, err := LoadKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

func TestConfigs(t *testing.T) {
	ca := newTestCA(t, time.Now())
	for _, cfg := range []*tls.Config{lanManager(t, ca), ClientConfig(ca.Pool(), nil)} {
		if cfg.MinVersion != tls.VersionTLS13 {
			t.Errorf("MinVersion %x", cfg.MinVersion)
		}
	}
}

func TestMasterHandshake(t *testing.T) {
	ca := newTestCA(t, time.Now())
	master := masterCert(t, ca, "m-7", time.Now(), time.Hour)
	srv, err := dial(t, lanManager(t, ca), ClientConfig(ca.Pool(), master))
	if err != nil || srv.handshakeErr != nil || srv.readErr != nil {
		t.Fatalf("client %v, server %v, read %v", err, srv.handshakeErr, srv.readErr)
	}
	if srv.state.Version != tls.VersionTLS13 {
		t.Errorf("version %x", srv.state.Version)
	}
	peers := srv.state.PeerCertificates
	if len(peers) == 0 {
		t.Fatal("server saw no client certificate")
	}
	if cn := peers[0].Subject.CommonName; cn != "m-7" {
		t.Errorf("peer CN %q", cn)
	}
	if id, ok := MachineOf(peers[0]); !ok || id != "m-7" {
		t.Errorf("MachineOf(peer) = %q, %v", id, ok)
	}
}

// A master without a certificate yet still gets through TLS, to join with
// a token.
func TestHandshakeWithoutClientCert(t *testing.T) {
	ca := newTestCA(t, time.Now())
	srv, err := dial(t, lanManager(t, ca), ClientConfig(ca.Pool(), nil))
	if err != nil || srv.handshakeErr != nil {
		t.Fatalf("client %v, server %v", err, srv.handshakeErr)
	}
	if len(srv.state.PeerCertificates) != 0 {
		t.Error("server saw a client certificate")
	}
}

func TestHandshakeRefusesClient(t *testing.T) {
	monthAgo := time.Now().Add(-30 * 24 * time.Hour)
	ca, other := newTestCA(t, monthAgo), newTestCA(t, time.Now())
	tests := []struct {
		name    string
		cert    *tls.Certificate
		wantErr string
	}{
		{"expired", masterCert(t, ca, "m-1", monthAgo.Add(24*time.Hour), time.Hour), "expired"},
		{"other CA", masterCert(t, other, "m-1", time.Now(), time.Hour), "unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := dial(t, lanManager(t, ca), ClientConfig(ca.Pool(), tt.cert))
			if srv.handshakeErr == nil || !strings.Contains(srv.handshakeErr.Error(), tt.wantErr) {
				t.Fatalf("server handshake: %v, want an error containing %q", srv.handshakeErr, tt.wantErr)
			}
			if srv.read != 0 {
				t.Errorf("server read %d bytes", srv.read)
			}
		})
	}
}

// A master's certificate cannot serve as a LAN manager's.
func TestClientRefusesMasterAsServer(t *testing.T) {
	ca := newTestCA(t, time.Now())
	master := masterCert(t, ca, "m-1", time.Now(), time.Hour)
	_, err := dial(t, ServerConfig(*master, ca.Pool()), ClientConfig(ca.Pool(), nil))
	if err == nil {
		t.Fatal("client accepted a master's certificate from the server")
	}
}

func TestPinnedConfig(t *testing.T) {
	ca := newTestCA(t, time.Now())
	cfg, seenCA := PinnedConfig(ca.Fingerprint())
	if seenCA() != nil {
		t.Error("CA seen before any handshake")
	}
	srv, err := dial(t, lanManager(t, ca), cfg)
	if err != nil || srv.handshakeErr != nil {
		t.Fatalf("client %v, server %v", err, srv.handshakeErr)
	}
	if srv.read != len("hello") {
		t.Errorf("server read %d bytes", srv.read)
	}
	if got := seenCA(); got == nil || !got.Equal(ca.Cert) {
		t.Errorf("seen CA %v", got)
	}
	// The CA pinned is also a pool the master can keep for ClientConfig.
	pool := x509.NewCertPool()
	pool.AddCert(seenCA())
	if _, err := dial(t, lanManager(t, ca), ClientConfig(pool, nil)); err != nil {
		t.Errorf("with the seen CA: %v", err)
	}
}

// The client refuses in the handshake, so no byte (no secret) is sent.
func TestPinnedConfigRefuses(t *testing.T) {
	ca, other := newTestCA(t, time.Now()), newTestCA(t, time.Now())
	// An impostor may send the real CA certificate, which is public, after
	// a leaf of its own.
	impostor, err := other.IssueServer(nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	impostor.Certificate[1] = ca.Cert.Raw
	tests := []struct {
		name    string
		server  *tls.Config
		wantErr string
	}{
		{"other CA", lanManager(t, other), "LAN manager's CA is " + other.Fingerprint() + ", not the token's " + ca.Fingerprint()},
		{"leaf from other CA", ServerConfig(impostor, nil), "LAN manager's certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, seenCA := PinnedConfig(ca.Fingerprint())
			srv, err := dial(t, tt.server, cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("client error %v, want %q", err, tt.wantErr)
			}
			if srv.handshakeErr == nil || srv.readErr == nil || srv.read != 0 {
				t.Errorf("server: handshake %v, read %d bytes, %v", srv.handshakeErr, srv.read, srv.readErr)
			}
			if seenCA() != nil {
				t.Error("CA seen")
			}
		})
	}
}
