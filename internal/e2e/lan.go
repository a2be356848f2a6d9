//go:build !windows

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// LAN is a running allexlanmanager on a loopback port with its own data
// dir. Restart stops it and starts it again on the same port and data dir.
type LAN struct {
	*Proc
	t         testing.TB
	Dir, Data string
	Port      int
	// URL is https:// unless the LAN manager runs with -insecure. Token
	// is its own (admin) token, carrying the CA's fingerprint over TLS
	// (K10…::token) so that allexctl and the admin client check the CA;
	// JoinToken is a master token made with `allexlanmanager token
	// create` (the LAN token itself with -insecure).
	URL, Token, JoinToken string
	Insecure              bool
	wrap, args            []string
	restartedProcs        []*Proc
}

// LANOpts tunes StartLAN; zero values take test-friendly defaults.
type LANOpts struct {
	// Token defaults to "lan-test-token".
	Token string
	// Heartbeat defaults to TestHeartbeat and Lease to TestLease, so
	// lost masters are fenced quickly (TimingFlags).
	Heartbeat, Lease time.Duration
	// Extra flags, e.g. "-needs", file or "-store", "memory".
	Extra []string
	// Wrap is a command that runs the LAN manager, e.g. "prlimit",
	// "--nofile=256", "--".
	Wrap []string
	// Insecure runs it with -insecure: plain HTTP, masters link with the
	// shared token.
	Insecure bool
}

// The fencing timings of tests (lanwire/fencing.go): StartLAN's and
// StartFaultLAN's defaults, short so that lost masters are fenced
// quickly. TestFence gives the fence grace and exit fence of a lease.
const (
	TestHeartbeat = 200 * time.Millisecond
	TestLease     = 2 * time.Second
	TestMargin    = 300 * time.Millisecond
)

// TestFence is the fence grace and the exit fence TimingFlags gives a
// lease: a quarter of it.
func TestFence(lease time.Duration) time.Duration { return lease / 4 }

// TimingFlags are allexlanmanager's fencing flags for tests: the given
// heartbeat and lease, TestFence(lease) as fence grace and exit fence,
// and TestMargin.
func TimingFlags(heartbeat, lease time.Duration) []string {
	return []string{"-heartbeat", heartbeat.String(), "-lease", lease.String(),
		"-fence-grace", TestFence(lease).String(), "-exit-fence", TestFence(lease).String(), "-margin", TestMargin.String()}
}

// StartLAN starts allexlanmanager on a free loopback port and waits until
// it listens.
func StartLAN(t testing.TB, o LANOpts) *LAN {
	t.Helper()
	if o.Token == "" {
		o.Token = "lan-test-token"
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = TestHeartbeat
	}
	if o.Lease == 0 {
		o.Lease = TestLease
	}
	dir := ShortDir(t)
	port := FreeBlock(t, 1)
	l := &LAN{t: t, Dir: dir, Data: filepath.Join(dir, "data"), Port: port, Token: o.Token, JoinToken: o.Token,
		URL: fmt.Sprintf("http://127.0.0.1:%d", port), wrap: o.Wrap, Insecure: o.Insecure}
	l.args = append([]string{"-addr", fmt.Sprintf("127.0.0.1:%d", port), "-data", l.Data, "-token", o.Token, "-log-level", "debug"},
		TimingFlags(o.Heartbeat, o.Lease)...)
	if o.Insecure {
		l.args = append(l.args, "-insecure")
	}
	l.args = append(l.args, o.Extra...)
	l.start(t)
	if !o.Insecure {
		l.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
		l.Token = PinnedToken(t, l.Data, o.Token)
		l.JoinToken = MakeToken(t, l.URL, l.Data, "master", "-token", o.Token)
	}
	return l
}

// PinnedToken is token carrying the fingerprint of the CA in a LAN
// manager's data dir: allexctl and the admin client then check that CA.
func PinnedToken(t testing.TB, dataDir, token string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "tls", "ca.crt"))
	if err != nil {
		t.Fatalf("the LAN manager's CA: %v", err)
	}
	ca, err := lanpki.ParseCertPEM(b)
	if err != nil {
		t.Fatalf("the LAN manager's CA: %v", err)
	}
	return "K10" + strings.TrimPrefix(lanpki.Fingerprint(ca), "sha256:") + "::" + token
}

// MakeToken runs `allexlanmanager token create -role role` against the
// LAN manager at url with data dir dataDir, and returns the token.
func MakeToken(t testing.TB, url, dataDir, role string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"token", "create", "-lan", url, "-data", dataDir, "-role", role}, extra...)
	out, err := exec.CommandContext(ctx, Bins.LAN, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("allexlanmanager %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (l *LAN) start(t testing.TB) {
	t.Helper()
	if len(l.wrap) > 0 {
		l.Proc = Start(t, l.Dir, l.wrap[0], append(append(l.wrap[1:len(l.wrap):len(l.wrap)], Bins.LAN), l.args...)...)
	} else {
		l.Proc = Start(t, l.Dir, Bins.LAN, l.args...)
	}
	l.WaitOutput("LAN manager listening", 30*time.Second)
}

// Restart SIGTERMs the LAN manager, checks it exited cleanly and starts it
// again with the same flags, port and data dir.
func (l *LAN) Restart(t testing.TB) {
	t.Helper()
	l.RestartAfter(t, nil)
}

// RestartAfter is Restart running whileDown (if not nil) while the LAN
// manager is stopped.
func (l *LAN) RestartAfter(t testing.TB, whileDown func()) {
	t.Helper()
	if err := l.Stop(20 * time.Second); err != nil {
		t.Fatalf("LAN manager exit: %v\n%s", err, l.Output())
	}
	l.restartedProcs = append(l.restartedProcs, l.Proc)
	if whileDown != nil {
		whileDown()
	}
	// The port was ours a moment ago; wait until the kernel lets it go
	// rather than assume it is free at once.
	Eventually(t, 30*time.Second, func() error {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", l.Port))
		if err != nil {
			return err
		}
		return ln.Close()
	})
	l.start(t)
}

// AllOutput is the output of every run of this LAN manager, oldest first.
func (l *LAN) AllOutput() string {
	var b strings.Builder
	for _, p := range l.restartedProcs {
		b.WriteString(p.Output())
		b.WriteString("---- restart ----\n")
	}
	b.WriteString(l.Output())
	return b.String()
}

// Client is an admin API client with the LAN manager's token.
func (l *LAN) Client() *adminclient.Client {
	return adminclient.New(l.URL, l.Token)
}

// Ctl runs allexctl against this LAN manager (-lan, -token) and returns
// stdout, stderr and the error.
func (l *LAN) Ctl(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Bins.Ctl, append([]string{"-lan", l.URL, "-token", l.Token}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// MustCtl is Ctl failing the test on error.
func (l *LAN) MustCtl(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := l.Ctl(t, args...)
	if err != nil {
		t.Fatalf("allexctl %v: %v\nstdout: %s\nstderr: %s", args, err, out, errOut)
	}
	return out
}

// callCtx bounds one admin call.
func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// AddNeeds adds needs through the admin API.
func (l *LAN) AddNeeds(t testing.TB, needs ...lanwire.Need) {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	c := l.Client()
	for _, n := range needs {
		if err := c.AddNeed(ctx, n); err != nil {
			t.Fatalf("add need %s: %v", n.Instance, err)
		}
	}
}

// Services lists the published services by instance.
func (l *LAN) Services(t testing.TB) map[string]lanwire.ServiceRecord {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	recs, err := l.Client().Services(ctx, "", "")
	if err != nil {
		t.Fatalf("services: %v", err)
	}
	out := make(map[string]lanwire.ServiceRecord, len(recs))
	for _, r := range recs {
		if _, dup := out[r.Instance]; dup {
			t.Fatalf("instance %s published twice: %+v", r.Instance, recs)
		}
		out[r.Instance] = r
	}
	return out
}

// Needs lists the needs by instance.
func (l *LAN) Needs(t testing.TB) map[string]adminapi.NeedStatus {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	list, err := l.Client().Needs(ctx)
	if err != nil {
		t.Fatalf("needs: %v", err)
	}
	out := make(map[string]adminapi.NeedStatus, len(list))
	for _, n := range list {
		out[n.Need.Instance] = n
	}
	return out
}

// Machines lists the masters the LAN manager knows, by id.
func (l *LAN) Machines(t testing.TB) map[string]adminapi.MachineInfo {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	list, err := l.Client().Machines(ctx)
	if err != nil {
		t.Fatalf("machines: %v", err)
	}
	out := make(map[string]adminapi.MachineInfo, len(list))
	for _, m := range list {
		out[m.ID] = m
	}
	return out
}

// WaitServices polls until exactly the instances want are published and
// returns the records.
func (l *LAN) WaitServices(t testing.TB, d time.Duration, want ...string) map[string]lanwire.ServiceRecord {
	t.Helper()
	var got map[string]lanwire.ServiceRecord
	Eventually(t, d, func() error {
		got = l.Services(t)
		if len(got) != len(want) {
			return fmt.Errorf("%d services published, want %d", len(got), len(want))
		}
		for _, w := range want {
			if _, ok := got[w]; !ok {
				return fmt.Errorf("%s not published", w)
			}
		}
		return nil
	})
	return got
}

// WaitConnected polls until the machines ids are connected.
func (l *LAN) WaitConnected(t testing.TB, d time.Duration, ids ...string) {
	t.Helper()
	Eventually(t, d, func() error {
		ms := l.Machines(t)
		for _, id := range ids {
			if !ms[id].Connected {
				return fmt.Errorf("machine %s not connected (%+v)", id, ms)
			}
		}
		return nil
	})
}

// DemoModule is the "modules" entry running allexmaster's demo child (TCP
// echo and HTTP) with port readiness, under the name name.
func DemoModule(name string) string {
	return fmt.Sprintf(`%q:{"command":%q,"args":["demochild"],"protocols":["tcp","http"],"readiness":"ports","stoptimeout":"2s"}`,
		name, Bins.Master)
}

// MasterOpts describes an allexmaster linked to a LAN manager.
type MasterOpts struct {
	// MachineID is required and must be unique per LAN manager.
	MachineID string
	// Token defaults to the LAN manager's.
	Token string
	// Size is the number of ports per protocol (default 20).
	Size int
	// Modules is the body of the "modules" object (default
	// DemoModule("demo")); "-" means no modules at all.
	Modules string
	// Extra is appended inside the config object (",\"maxprocesses\":3").
	Extra string
}

// LANMasterConfig is an allexmasterconfig.json linking to the LAN manager
// on 127.0.0.1:lanPort, with ports from base, size per protocol, and the
// socket and state dir in dir.
func LANMasterConfig(dir string, base, size, lanPort int, token, machineID, modules, extra string) string {
	mods := ""
	if modules != "-" {
		mods = `,"modules":{` + modules + `}`
	}
	return fmt.Sprintf(`{"lanmanageraddress":"127.0.0.1","lanmanagerport":%d,"token":%q,"machineid":%q,"address":"127.0.0.1",`+
		`"portrangestart":{"tcp":%d,"http":%d,"ws":%d},"portrangesize":%d,"socket":%q,"statedir":%q%s%s}`,
		lanPort, token, machineID, base, base+size, base+2*size, size,
		filepath.Join(dir, "m.sock"), filepath.Join(dir, "state"), mods, extra)
}

// StartLANMaster starts an allexmaster linked to l in a fresh dir with
// free port ranges and waits until it runs (not until it is connected:
// see LAN.WaitConnected).
func StartLANMaster(t testing.TB, l *LAN, o MasterOpts) *Master {
	t.Helper()
	if o.Token == "" {
		o.Token = l.JoinToken
	}
	if l.Insecure {
		o.Extra += `,"laninsecure":true`
	}
	if o.Size == 0 {
		o.Size = 20
	}
	if o.Modules == "" {
		o.Modules = DemoModule("demo")
	}
	dir := ShortDir(t)
	base := FreeBlock(t, 3*o.Size)
	WriteFile(t, dir, "allexmasterconfig.json", LANMasterConfig(dir, base, o.Size, l.Port, o.Token, o.MachineID, o.Modules, o.Extra))
	m := &Master{Dir: dir, Socket: filepath.Join(dir, "m.sock"), TCP: base, HTTP: base + o.Size, WS: base + 2*o.Size}
	m.Proc = Start(t, dir, Bins.Master, "-log-level", "debug")
	m.WaitOutput("allexmaster running", 30*time.Second)
	return m
}

// Port blocks for masters come from below the kernel's ephemeral range
// (32768 and up on Linux), so the source ports of the tests' own
// connections never land in a child's range.
const (
	rangeLow  = 20000
	rangeHigh = 32700
)

func bindable(base, n int) bool {
	for p := base; p < base+n; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

// KillAtCleanup SIGKILLs pids at cleanup: children of a master that was
// itself SIGKILLed or frozen should die by its keeper, but a test that
// fails must not leak them if they did not.
func KillAtCleanup(t testing.TB, pids ...int) {
	t.Cleanup(func() {
		for _, pid := range pids {
			if pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

// Dial checks that every port of rec accepts a TCP connection.
func Dial(rec lanwire.ServiceRecord) error {
	if len(rec.Ports) == 0 {
		return fmt.Errorf("%s publishes no ports", rec.Instance)
	}
	for proto, port := range rec.Ports {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(rec.Address, fmt.Sprint(port)), 5*time.Second)
		if err != nil {
			return fmt.Errorf("%s %s port: %w", rec.Instance, proto, err)
		}
		c.Close()
	}
	return nil
}

// TimedEvent is a service event and when the watcher received it.
type TimedEvent struct {
	At time.Time
	adminapi.ServiceEvent
}

// Watcher follows /v1/services/watch, reconnecting when the LAN manager
// restarts, and keeps every event with its arrival time.
type Watcher struct {
	mu      sync.Mutex
	events  []TimedEvent
	changed chan struct{}
}

// Watch starts a watcher of module ("" for all) until the test ends.
func (l *LAN) Watch(t testing.TB, module string) *Watcher {
	w := &Watcher{changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	c := l.Client()
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			err := c.Watch(ctx, module, func(ev adminapi.ServiceEvent) error {
				w.add(TimedEvent{At: time.Now(), ServiceEvent: ev})
				return nil
			})
			if errors.Is(err, context.Canceled) {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *Watcher) add(ev TimedEvent) {
	w.mu.Lock()
	w.events = append(w.events, ev)
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// Events returns a copy of the events so far.
func (w *Watcher) Events() []TimedEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]TimedEvent(nil), w.events...)
}

// WaitFor blocks until ok accepts the events seen so far or d passes;
// it wakes on every event, so callers can time what they wait for.
func (w *Watcher) WaitFor(t testing.TB, d time.Duration, ok func([]TimedEvent) error) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		evs, ch := w.events, w.changed
		w.mu.Unlock()
		err := ok(evs)
		if err == nil {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("watch: after %s: %v", d, err)
		}
	}
}
