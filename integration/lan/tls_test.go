//go:build !windows

package lan_test

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// TestJoinChecksTheCAFirst: a join token naming another CA is refused by
// the master in the TLS handshake, so the LAN manager never receives a
// request, and so never the token's secret.
func TestJoinChecksTheCAFirst(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	other, err := lanpki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := lanpki.ParseToken(lan.JoinToken)
	if err != nil {
		t.Fatal(err)
	}
	tok.CAHash = other.Fingerprint()
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1", Token: tok.String()})
	m.WaitOutput("not the token's "+other.Fingerprint(), wait)
	lan.WaitOutput("TLS handshake error", wait)
	if out := lan.Output(); strings.Contains(out, "issued a master certificate") || strings.Contains(out, "/v1/join") {
		t.Errorf("the LAN manager heard the join:\n%s", out)
	}
	if ms := lan.Machines(t); len(ms) != 0 {
		t.Errorf("machines: %+v", ms)
	}
}

// TestMasterSpeaksOnlyAsItself: a master's certificate names its machine;
// a hello as another machine is refused, and the machine it claimed
// keeps its session and its services.
func TestMasterSpeaksOnlyAsItself(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, demoNeed("d1"))
	before := lan.WaitServices(t, wait, "d1")

	r, _, err := dialRaw(t, lan, "intruder", "")
	if err != nil {
		t.Fatal(err)
	}
	r.sendFrame(lanwire.TypeHello, &lanwire.Hello{MachineID: "m1", Identity: "intruder-identity-0123456789", Address: "127.0.0.1", Modules: []string{"demo"}})
	e := r.next(lanwire.TypeError).(*lanwire.Error)
	if !strings.Contains(e.Message, `certificate is machine "intruder"'s; it cannot say hello as "m1"`) {
		t.Errorf("error frame: %+v", e)
	}
	time.Sleep(500 * time.Millisecond) // what a replaced session would take to show
	if got := lan.Services(t)["d1"]; got.PID != before["d1"].PID || got.MachineID != "m1" {
		t.Errorf("d1 after the intruder: %+v, before %+v", got, before["d1"])
	}
	if !lan.Machines(t)["m1"].Connected {
		t.Error("m1 lost its session")
	}
}

// TestExpiredCertificateRefused: a master certificate past its end fails
// the handshake.
func TestExpiredCertificateRefused(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	ca := loadCA(t, lan)
	keyPEM, csrPEM, err := lanpki.NewMasterKey("old")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignMaster(csrPEM, "old", time.Now().Add(-50*time.Minute), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := lanpki.LoadKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := lan.ClientTLS()
	cfg.Certificates = []tls.Certificate{cert}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: cfg}
	conn, _, err := d.Dial(fmt.Sprintf("wss://127.0.0.1:%d%s", lan.Port, lanwire.Path), nil)
	if err == nil {
		// TLS 1.3 reports the server's refusal of a client certificate
		// on the first read.
		_, _, err = conn.ReadMessage()
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("link with an expired certificate: %v", err)
	}
	lan.WaitOutput("certificate has expired", wait)
}

func loadCA(t *testing.T, lan *e2e.LAN) *lanpki.CA {
	t.Helper()
	certPEM, err1 := os.ReadFile(filepath.Join(lan.Data, "tls", "ca.crt"))
	keyPEM, err2 := os.ReadFile(filepath.Join(lan.Data, "tls", "ca.key"))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	ca, err := lanpki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestRevokedMachine: `allexctl machines revoke` closes the master's link
// and refuses it from then on, also after it restarts; it fences its
// copies, and its need moves to another master.
func TestRevokedMachine(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	m1 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, demoNeed("d1"))
	before := lan.WaitServices(t, wait, "d1")["d1"]
	e2e.KillAtCleanup(t, before.PID)
	m2 := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m2"})
	lan.WaitConnected(t, wait, "m2")

	out := lan.MustCtl(t, "machines", "revoke", "-reason", "stolen laptop", "m1")
	if !strings.Contains(out, "machine m1 revoked") {
		t.Errorf("revoke said %q", out)
	}
	m1.WaitOutput("this machine was revoked: stolen laptop", wait)
	m1.WaitOutput("LAN manager refused this master", wait)
	e2e.Eventually(t, wait, func() error {
		if !processGone(before.PID) {
			return fmt.Errorf("m1's child %d still runs", before.PID)
		}
		return nil
	})
	e2e.Eventually(t, wait, func() error {
		if got := lan.Services(t)["d1"]; got.MachineID != "m2" {
			return fmt.Errorf("d1 on %q, want m2", got.MachineID)
		}
		return nil
	})
	_ = m2
	if err := m1.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Restarted, with its certificate in its state dir: still refused.
	again := e2e.Start(t, m1.Dir, e2e.Bins.Master, "-log-level", "debug")
	again.WaitOutput("LAN manager refused this master", wait)
	if lan.Machines(t)["m1"].Connected {
		t.Error("a revoked machine linked again")
	}
}

// TestRolesOfTokens: a read token lists services, needs and machines and
// watches, but cannot add needs or revoke; a revoked token is refused.
func TestRolesOfTokens(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	read := e2e.MakeToken(t, lan.URL, lan.Data, "read", "-token", lan.Bearer(), "-description", "dashboard")
	ctl := func(args ...string) (string, string, error) {
		return e2e.Ctl(t, "unused", append([]string{"-lan", lan.URL, "-token", read}, args...)...)
	}
	for _, args := range [][]string{{"needs", "ls"}, {"services"}, {"machines"}} {
		if out, errOut, err := ctl(args...); err != nil {
			t.Errorf("read token: %v: %v %s %s", args, err, out, errOut)
		}
	}
	_, errOut, err := ctl("needs", "add", "-module", "demo", "r1")
	if err == nil || !strings.Contains(errOut, "403") || !strings.Contains(errOut, "needs the admin role; this caller is a read token") {
		t.Errorf("read token adding a need: %v %q", err, errOut)
	}
	if _, errOut, err := ctl("machines", "revoke", "-force", "m9"); err == nil || !strings.Contains(errOut, "403") {
		t.Errorf("read token revoking: %v %q", err, errOut)
	}
	if n := lan.Needs(t); len(n) != 0 {
		t.Errorf("needs: %+v", n)
	}
	tok, _ := lanpki.ParseToken(read)
	list := lanTokenCmd(t, lan, "ls")
	if !strings.Contains(list, tok.ID+"  read") || !strings.Contains(list, "dashboard") {
		t.Errorf("token ls:\n%s", list)
	}
	lanTokenCmd(t, lan, "revoke", tok.ID)
	if list := lanTokenCmd(t, lan, "ls"); strings.Contains(list, tok.ID) {
		t.Errorf("token ls after revoke:\n%s", list)
	}
	if _, errOut, err := ctl("services"); err == nil || !strings.Contains(errOut, "401") {
		t.Errorf("revoked token: %v %q", err, errOut)
	}
}

// lanTokenCmd runs `allexlanmanager token VERB -lan … -data … ARGS`.
func lanTokenCmd(t *testing.T, lan *e2e.LAN, verb string, args ...string) string {
	t.Helper()
	full := append([]string{"token", verb, "-lan", lan.URL, "-data", lan.Data, "-token", lan.Bearer()}, args...)
	out, err := exec.Command(e2e.Bins.LAN, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("allexlanmanager %v: %v\n%s", full, err, out)
	}
	return string(out)
}

// TestPlaintextRefused: plain HTTP to a LAN manager that speaks TLS is
// refused; one run with -insecure serves it, and masters with
// laninsecure link to it.
func TestPlaintextRefused(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/needs", lan.Port))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to TLS: %d", resp.StatusCode)
	}
	_, errOut, err := e2e.Ctl(t, "unused", "-lan", fmt.Sprintf("http://127.0.0.1:%d", lan.Port), "-token", lan.Bearer(), "needs", "ls")
	if err == nil || !strings.Contains(errOut, "HTTP request to an HTTPS server") {
		t.Errorf("allexctl over http to TLS: %v %q", err, errOut)
	}

	plain := e2e.StartLAN(t, e2e.LANOpts{Insecure: true})
	plain.WaitOutput("serving plain HTTP (-insecure)", wait)
	e2e.StartLANMaster(t, plain, e2e.MasterOpts{MachineID: "p1"})
	plain.WaitConnected(t, wait, "p1")
	plain.AddNeeds(t, demoNeed("d1"))
	plain.WaitServices(t, wait, "d1")
}
