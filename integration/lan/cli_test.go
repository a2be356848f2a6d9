//go:build !windows

package lan_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
)

// ctlAt runs allexctl with -lan given as host:port, the form people type.
func ctlAt(t *testing.T, lan *e2e.LAN, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2e.Bins.Ctl, append([]string{"-lan", "127.0.0.1:" + strconv.Itoa(lan.Port), "-token", lan.Token}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// TestHandWrittenConfigTakesDefaults: a config file saved with a UTF-8
// BOM, without lanmanageraddress and with only the tcp range start, runs
// linked to the LAN manager on 127.0.0.1 (the README's default) with the
// default http and ws ranges.
func TestHandWrittenConfigTakesDefaults(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	dir := e2e.ShortDir(t)
	base := e2e.FreeBlock(t, 10)
	sock := filepath.Join(dir, "m.sock")
	e2e.WriteFile(t, dir, "allexmasterconfig.json", "\xEF\xBB\xBF"+fmt.Sprintf(
		`{"lanmanagerport":%d,"token":%q,"machineid":"hand","address":"127.0.0.1","portrangestart":{"tcp":%d},"portrangesize":10,"socket":%q,"statedir":%q}`,
		lan.Port, lan.JoinToken, base, sock, filepath.Join(dir, "state")))
	m := e2e.Start(t, dir, e2e.Bins.Master)
	m.WaitOutput("allexmaster running", wait)
	lan.WaitConnected(t, wait, "hand")
	st := strings.Join(strings.Fields(e2e.MustCtl(t, sock, "status")), " ")
	for _, want := range []string{"LAN manager 127.0.0.1:" + strconv.Itoa(lan.Port) + " (connected)",
		fmt.Sprintf("tcp ports %d-%d", base, base+9), "http ports 16000-16009", "ws ports 17000-17009"} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %q:\n%s", want, st)
		}
	}
}

// TestNeedProtocolsFromModule: a need added without -protocols runs with
// its module's protocols and is published; one asking for a protocol its
// module does not declare is given back with the reason, shown by needs
// ls, and not claimed again by that master.
func TestNeedProtocolsFromModule(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	if _, errOut, err := ctlAt(t, lan, "needs", "add", "-module", "demo", "p1"); err != nil {
		t.Fatalf("needs add p1: %v %s", err, errOut)
	}
	rec := lan.WaitServices(t, wait, "p1")["p1"]
	if len(rec.Ports) != 2 || rec.Ports["tcp"] == 0 || rec.Ports["http"] == 0 {
		t.Fatalf("p1 published with ports %v, want the module's tcp and http", rec.Ports)
	}

	if _, errOut, err := ctlAt(t, lan, "needs", "add", "-module", "demo", "-protocols", "tcp,ws", "p2"); err != nil {
		t.Fatalf("needs add p2: %v %s", err, errOut)
	}
	const why = "need p2 asks for protocol ws, which module demo does not declare on this master (its protocols: tcp,http)"
	var notBefore time.Time
	e2e.Eventually(t, wait, func() error {
		n := lan.Needs(t)["p2"]
		if n.Attempts != 1 || !strings.Contains(n.LastError, why) {
			return fmt.Errorf("p2: attempts %d, last error %q", n.Attempts, n.LastError)
		}
		notBefore = n.NotBefore
		return nil
	})
	if out, _, _ := ctlAt(t, lan, "needs", "ls"); !strings.Contains(out, why) {
		t.Errorf("needs ls does not show why:\n%s", out)
	}
	// Once p2's backoff is over, a new need is placed on this master, and
	// p2 is not placed there again.
	e2e.Eventually(t, wait, func() error {
		if time.Now().Before(notBefore) {
			return fmt.Errorf("p2 backs off until %v", notBefore)
		}
		return nil
	})
	if _, errOut, err := ctlAt(t, lan, "needs", "add", "-module", "demo", "p3"); err != nil {
		t.Fatalf("needs add p3: %v %s", err, errOut)
	}
	lan.WaitServices(t, wait, "p1", "p3")
	if n := lan.Needs(t)["p2"]; n.Attempts != 1 || n.State != "pending" {
		t.Errorf("p2 after a later offer: %+v, want pending after 1 attempt", n)
	}
	if c := strings.Count(m.Output(), "cannot take a granted need"); c != 1 {
		t.Errorf("master refused %d grants, want 1:\n%s", c, m.Output())
	}
}

// TestStopOfLANNeedChild: allexctl stop of a LAN need's child is refused
// with what to do instead, and the child runs on; with -force it stops and
// the need is satisfied again.
func TestStopOfLANNeedChild(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1"})
	lan.WaitConnected(t, wait, "m1")
	lan.AddNeeds(t, demoNeed("s1"))
	rec := lan.WaitServices(t, wait, "s1")["s1"]

	_, errOut, err := e2e.Ctl(t, m.Socket, "stop", "s1")
	const want = "allexctl: s1 is a LAN need; the LAN manager would start it again: remove the need with `allexctl needs rm s1`, or use -force to stop this copy (it is re-offered)\n"
	if err == nil || errOut != want {
		t.Fatalf("stop s1: err %v, stderr %q; want %q", err, errOut, want)
	}
	if pid := alive(t, m)["s1"]; pid != rec.PID {
		t.Fatalf("s1 runs as %d after a refused stop, want %d", pid, rec.PID)
	}

	e2e.MustCtl(t, m.Socket, "stop", "-force", "s1")
	e2e.Eventually(t, wait, func() error {
		if !processGone(rec.PID) {
			return fmt.Errorf("pid %d still exists", rec.PID)
		}
		again := lan.Services(t)["s1"]
		if again.PID == 0 || again.Epoch <= rec.Epoch {
			return fmt.Errorf("s1 not satisfied again: %+v", again)
		}
		return nil
	})
}

// TestCtlLanAddressForms: -lan and ALLEX_LAN take host:port and host;
// a bad value is a clear error, not a URL parse error.
func TestCtlLanAddressForms(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	if out, errOut, err := ctlAt(t, lan, "needs", "ls"); err != nil || !strings.HasPrefix(out, "INSTANCE") {
		t.Errorf("-lan host:port: %v %q %q", err, out, errOut)
	}
	cmd := exec.Command(e2e.Bins.Ctl, "-token", lan.Token, "needs", "ls")
	cmd.Env = append(cmd.Environ(), "ALLEX_LAN=127.0.0.1:"+strconv.Itoa(lan.Port))
	if out, err := cmd.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "INSTANCE") {
		t.Errorf("ALLEX_LAN host:port: %v %s", err, out)
	}
	_, errOut, err := e2e.Ctl(t, "unused", "-lan", "127.0.0.1:x", "-token", lan.Token, "needs", "ls")
	if err == nil || !strings.Contains(errOut, `-lan "127.0.0.1:x": port "x" is not a number 1-65535 (want host, host:port or http(s)://host:port)`) {
		t.Errorf("bad -lan: %v %q", err, errOut)
	}
}

// TestFixedPortNeedsItsProtocol: a need fixing the port of a protocol it
// does not list is refused by allexctl and by the admin API, and nothing
// is added.
func TestFixedPortNeedsItsProtocol(t *testing.T) {
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	_, errOut, err := ctlAt(t, lan, "needs", "add", "-module", "demo", "-fixed", "tcp=9000", "f1")
	if err == nil || !strings.Contains(errOut, "needs add: -fixed tcp=9000: tcp is not in -protocols (none); list it there too") {
		t.Errorf("needs add -fixed without -protocols: %v %q", err, errOut)
	}
	req, _ := http.NewRequest("POST", lan.URL+"/v1/needs", strings.NewReader(`{"instance":"f1","module":"demo","fixedports":{"tcp":9000}}`))
	req.Header.Set("Authorization", "Bearer "+lan.Bearer())
	resp, err := lan.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body.String(), "need f1: fixedports.tcp: tcp is not in protocols (none)") {
		t.Errorf("POST /v1/needs: %d %s", resp.StatusCode, body.String())
	}
	if n := lan.Needs(t); len(n) != 0 {
		t.Errorf("needs after refused adds: %+v", n)
	}
}
