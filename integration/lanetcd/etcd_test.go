//go:build linux

package lanetcd_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/internal/etcdtest"
	"github.com/allex-go/allex/internal/netns"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

const token = "etcd-test-token"

// lm is one allexlanmanager on the shared etcd.
type lm struct {
	*e2e.Proc
	url  string // https://host:port
	dir  string
	args []string
	host *netns.Host // nil on loopback
	// dial is how the test reaches it (nil: from its own namespace).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ca is the LAN's CA, which every LAN manager of the LAN shares
	// (kept in etcd; none is written to the data dir).
	ca *x509.Certificate
}

// addr is l's host:port, as masters are given it (https by default).
func (l *lm) addr() string { return strings.TrimPrefix(l.url, "https://") }

// learnCA takes the LAN's CA from a TLS handshake with l, which sends
// its certificate and the CA that signed it: the last of the chain. It
// tries again for a while: a handshake under way when a standby is
// elected and hands its socket over is cut off.
func (l *lm) learnCA(t testing.TB) {
	t.Helper()
	if l.ca != nil {
		return
	}
	e2e.Eventually(t, 10*time.Second, func() (err error) {
		l.ca, err = l.fetchCA()
		return err
	})
}

// fetchCA shakes hands with l without checking its certificate and
// returns the last certificate it sent, once it has checked that the
// first is a LAN manager's, signed by it.
func (l *lm) fetchCA() (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	dial := l.dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	raw, err := dial(ctx, "tcp", l.addr())
	if err != nil {
		return nil, fmt.Errorf("the LAN's CA from %s: %w", l.url, err)
	}
	defer raw.Close()
	conn := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, ServerName: lanpki.ServerName, InsecureSkipVerify: true})
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("the LAN's CA from %s: handshake: %w", l.url, err)
	}
	chain := conn.ConnectionState().PeerCertificates
	if len(chain) < 2 {
		return nil, fmt.Errorf("the LAN's CA from %s: the server sent %d certificates, want its own and the CA", l.url, len(chain))
	}
	ca := chain[len(chain)-1]
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: lanpki.ServerName,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); !ca.IsCA || err != nil {
		return nil, fmt.Errorf("the LAN's CA from %s: the last certificate (CA: %v) does not sign the first: %v", l.url, ca.IsCA, err)
	}
	return ca, nil
}

// pinned is the LAN's root token carrying its CA's fingerprint: the
// admin client trusts that CA alone.
func (l *lm) pinned() string {
	return "K10" + strings.TrimPrefix(lanpki.Fingerprint(l.ca), "sha256:") + "::" + token
}

// httpClient calls l over TLS, trusting the LAN's CA, with timeout
// bounding each request.
func (l *lm) httpClient(timeout time.Duration) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(l.ca)
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext:     l.dial,
		TLSClientConfig: lanpki.ClientConfig(pool, nil),
	}}
}

// joinToken makes a master join token (role master, never expiring)
// through l, leader or standby (which forwards it).
func (l *lm) joinToken(t testing.TB) string {
	t.Helper()
	var tok string
	e2e.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := l.client().CreateToken(ctx, adminapi.RoleMaster, 0, "lanetcd test master")
		tok = out.Token
		return err
	})
	if _, _, ok := lanpki.SplitPin(tok); !ok {
		t.Fatalf("join token %q carries no CA fingerprint", tok)
	}
	return tok
}

func startLM(t testing.TB, store, name string) *lm {
	t.Helper()
	return startLMTTL(t, store, name, 2*time.Second) // the default
}

// startLMTTL starts a LAN manager with leader TTL ttl and the extra flags.
func startLMTTL(t testing.TB, store, name string, ttl time.Duration, extra ...string) *lm {
	t.Helper()
	dir := e2e.ShortDir(t)
	port := e2e.FreeBlock(t, 1)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"-addr", addr, "-data", filepath.Join(dir, name), "-token", token,
		"-store", store, "-leader-ttl", ttl.String(), "-log-level", "debug"}, extra...)
	l := &lm{url: "https://" + addr, dir: dir, args: args}
	l.start(t)
	return l
}

// start runs the LAN manager (again, on the same address) and waits
// until it stands by.
func (l *lm) start(t testing.TB) {
	t.Helper()
	l.Proc = e2e.Start(t, l.dir, e2e.Bins.LAN, l.args...)
	l.WaitOutput("standing by for the leadership", 30*time.Second)
	l.learnCA(t)
}

// client is an admin client of l with the pinned root token.
func (l *lm) client() *adminclient.Client {
	c := adminclient.New(l.url, l.pinned())
	if l.dial != nil {
		c.HTTP.Transport.(*http.Transport).DialContext = l.dial
	}
	return c
}

func (l *lm) needs(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns, err := l.client().Needs(ctx)
	if err != nil {
		t.Fatalf("needs from %s: %v", l.url, err)
	}
	var out []string
	for _, n := range ns {
		out = append(out, n.Need.Instance)
	}
	return out
}

// standby checks that l answers a master's link as a standby naming
// leader.
func (l *lm) standby(t *testing.T, leader string) {
	t.Helper()
	req, _ := http.NewRequest("GET", l.url+lanwire.Path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := l.httpClient(10 * time.Second).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error, Leader string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusServiceUnavailable || body.Leader != leader || resp.Header.Get("X-Allex-Leader") != leader {
		t.Fatalf("standby answered %d %+v, want 503 naming %s", resp.StatusCode, body, leader)
	}
}

// addNeeds adds n needs of module named prefix000, prefix001, … through
// l, waiting at most within for their commit.
func addNeeds(t testing.TB, l *lm, module, prefix string, n int, within time.Duration) {
	t.Helper()
	var needs []lanwire.Need
	for k := range n {
		needs = append(needs, lanwire.Need{Instance: fmt.Sprintf("%s%03d", prefix, k), Module: module})
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := l.client().AddNeeds(ctx, needs); err != nil {
		t.Fatal(err)
	}
}

// TestLeaderKilled: the leader is killed (-9); the standby leads within
// the leader's lease, with every acknowledged need, and one etcd member
// down changes nothing.
func TestLeaderKilled(t *testing.T) {
	store, members := etcdLAN(t, "/lan1")
	a, b := pair(t, store)
	b.standby(t, a.url)
	addNeeds(t, a, "web", "n", 150, 10*time.Second) // more than one etcd transaction
	members[0].Kill()
	addNeeds(t, a, "web", "m", 5, 10*time.Second)
	killed := time.Now()
	if err := a.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.WaitOutput("elected: leading the LAN", 30*time.Second)
	took := time.Since(killed)
	t.Logf("standby led %v after the leader was killed (lease 2s)", took)
	if took > 5*time.Second {
		t.Errorf("takeover took %v", took)
	}
	e2e.Eventually(t, 10*time.Second, func() error {
		if got := len(b.needs(t)); got != 155 {
			return fmt.Errorf("new leader has %d needs, want 155", got)
		}
		return nil
	})
}

// TestPausedLeaderCannotWrite: a leader stopped (SIGSTOP) past its lease
// is replaced; when it runs again it writes nothing and stops, and the
// new leader's state is what it committed.
func TestPausedLeaderCannotWrite(t *testing.T) {
	store, _ := etcdLAN(t, "/lan2")
	a, b := pair(t, store)
	addNeeds(t, a, "web", "n", 3, 10*time.Second)
	// A request to the paused leader is taken in before the pause and
	// waits in its socket.
	if err := a.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	late := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		late <- a.client().AddNeed(ctx, lanwire.Need{Instance: "late", Module: "web", Protocols: []string{"tcp"}})
	}()
	b.WaitOutput("elected: leading the LAN", 30*time.Second)
	addNeeds(t, b, "web", "b", 2, 10*time.Second)
	if err := a.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := a.Wait(20 * time.Second); err == nil || !strings.Contains(a.Output(), "lost the leadership") {
		t.Fatalf("paused leader after SIGCONT: exit %v\n%s", err, a.Output())
	}
	if err := <-late; err == nil {
		t.Fatal("the paused leader acknowledged a need after it was replaced")
	}
	want := "b000,b001,n000,n001,n002"
	if got := strings.Join(b.needs(t), ","); got != want {
		t.Fatalf("new leader's needs %s, want %s", got, want)
	}
}

// etcdLAN starts three etcd members and returns the -store value of a
// LAN under prefix on them.
func etcdLAN(t testing.TB, prefix string) (store string, members []*etcdtest.Member) {
	t.Helper()
	members = etcdtest.Cluster(t, 3)
	return "etcd://" + strings.Join(trimScheme(etcdtest.Endpoints(members)), ",") + prefix, members
}

// pair starts a LAN manager that leads and one that stands by.
func pair(t testing.TB, store string) (leader, standby *lm) {
	t.Helper()
	leader = startLM(t, store, "a")
	leader.WaitOutput("elected: leading the LAN", 30*time.Second)
	standby = startLM(t, store, "b")
	sameCA(t, leader, standby)
	return leader, standby
}

// sameCA checks that LAN managers of one LAN serve with one CA, the one
// the first made and sealed in etcd.
func sameCA(t testing.TB, first *lm, others ...*lm) {
	t.Helper()
	for _, l := range others {
		if !l.ca.Equal(first.ca) {
			t.Fatalf("%s serves with CA %s, %s with %s", l.url, lanpki.Fingerprint(l.ca), first.url, lanpki.Fingerprint(first.ca))
		}
	}
}

func trimScheme(urls []string) []string {
	var out []string
	for _, u := range urls {
		out = append(out, strings.TrimPrefix(u, "http://"))
	}
	return out
}

// TestMasterFollowsTheLeader: a master given both LAN managers' addresses
// (the standby's first) links to the leader; when the leader is killed it
// links to the new one, which takes its services over as they are: every
// child keeps its pid and every service stays published.
func TestMasterFollowsTheLeader(t *testing.T) {
	store, _ := etcdLAN(t, "/lan3")
	a, b := pair(t, store)
	m := startMaster(t, b, a)
	addNeeds(t, a, "demo", "d", 4, time.Minute)
	before := published(t, a, 4)
	if err := a.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	b.WaitOutput("elected: leading the LAN", 30*time.Second)
	e2e.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms, err := b.client().Machines(ctx)
		if err != nil {
			return err
		}
		if len(ms) != 1 || !ms[0].Connected || ms[0].Copies != 4 {
			return fmt.Errorf("machines on the new leader: %+v", ms)
		}
		after, err := servicePIDs(b, 4)
		if err != nil {
			return err
		}
		for inst, pid := range before {
			if after[inst] != pid {
				return fmt.Errorf("%s: pid %d, was %d", inst, after[inst], pid)
			}
		}
		return nil
	})
	t.Logf("the master is linked to the new leader, which lists every service with its pid, %v after the kill", time.Since(killed))
	if strings.Contains(m.Output(), "LAN lease running out") {
		t.Fatalf("the master fenced its children:\n%s", m.Output())
	}
}

// startMaster starts an allexmaster linked to the LAN managers ls, in
// that order, with the demo module.
func startMaster(t testing.TB, ls ...*lm) *e2e.Proc {
	t.Helper()
	return startMasterAs(t, "m1", ls...)
}

// startMasterAs is startMaster with machine id id.
func startMasterAs(t testing.TB, id string, ls ...*lm) *e2e.Proc {
	t.Helper()
	var addrs []string
	for _, l := range ls {
		addrs = append(addrs, l.addr())
	}
	join := ls[0].joinToken(t)
	dir := e2e.ShortDir(t)
	const size = 100
	base := e2e.FreeBlock(t, 3*size)
	e2e.WriteFile(t, dir, "allexmasterconfig.json", fmt.Sprintf(
		`{"lanmanageraddress":%q,"token":%q,"machineid":%q,"address":"127.0.0.1",`+
			`"portrangestart":{"tcp":%d,"http":%d,"ws":%d},"portrangesize":%d,"socket":%q,"statedir":%q,"modules":{%s}}`,
		strings.Join(addrs, ","), join, id, base, base+size, base+2*size, size,
		filepath.Join(dir, "m.sock"), filepath.Join(dir, "state"), e2e.DemoModule("demo")))
	m := e2e.Start(t, dir, e2e.Bins.Master, "-log-level", "debug")
	m.WaitOutput("allexmaster running", 30*time.Second)
	return m
}

// published waits until l lists want services and returns their pids.
func published(t *testing.T, l *lm, want int) map[string]int {
	t.Helper()
	var out map[string]int
	e2e.Eventually(t, 30*time.Second, func() (err error) {
		out, err = servicePIDs(l, want)
		return err
	})
	return out
}

// servicePIDs returns the pids of the services l lists, by instance, or
// an error unless it lists want.
func servicePIDs(l *lm, want int) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	svcs, err := l.client().Services(ctx, "", "")
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, s := range svcs {
		out[s.Instance] = s.PID
	}
	if len(out) != want {
		return out, fmt.Errorf("%d services published, want %d", len(out), want)
	}
	return out, nil
}

// TestEtcdOutage: all of etcd is down for 10 s under a leader whose
// lease (-leader-ttl 15s) outlasts it: the leader stays, no master
// fences, every child keeps running, and the LAN places needs again
// once etcd is back.
func TestEtcdOutage(t *testing.T) {
	store, members := etcdLAN(t, "/lan4")
	a := startLMTTL(t, store, "a", 15*time.Second)
	a.WaitOutput("elected: leading the LAN", 30*time.Second)
	m := startMaster(t, a)
	addNeeds(t, a, "demo", "d", 2, time.Minute)
	before := published(t, a, 2)
	for _, mb := range members {
		mb.Kill()
	}
	time.Sleep(10 * time.Second)
	for _, mb := range members {
		mb.Restart()
	}
	addNeeds(t, a, "demo", "e", 1, time.Minute)
	after := published(t, a, 3)
	for inst, pid := range before {
		if after[inst] != pid {
			t.Errorf("%s: pid %d after the outage, was %d", inst, after[inst], pid)
		}
	}
	for _, out := range []string{m.Output(), a.Output()} {
		if strings.Contains(out, "LAN lease running out") || strings.Contains(out, "lost the leadership") {
			t.Fatalf("fenced or deposed during the outage:\n%s", out)
		}
	}
}
