//go:build linux

package nemesis

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/procfs"

	"github.com/allex-go/allex/internal/netns"
)

const (
	lmPort     = 23552
	module     = "nem"
	tcpBase    = 20000 // every master gets the same ranges: hosts have their own ports
	portsEach  = 500
	startBound = 60 * time.Second // a daemon's start, a setup step
)

// cluster is the LAN under test and the harness's view of it.
type cluster struct {
	t               *testing.T
	p               params
	lan             *netns.LAN
	bin, dir, token string
	tokenFile       string
	// joinToken is the masters' config "token" over TLS: a master token
	// made with `allexlanmanager token create` once the LAN manager first
	// runs. Masters on a fresh state dir (the first runs, clones) join
	// with it; restarted ones keep their certificate in <statedir>/lan.
	joinToken string
	prefix    string // of every instance name of this run
	began     time.Time
	nice      int // added to the daemons' niceness: the test's own

	trusted bool // the admin client speaks HTTPS with the LAN's CA
	lm      *lanManager
	masters []*master
	admin   *admin
	chk     *checker

	ops        []*opRecord
	clones     int // clone dirs made so far
	added      int // needs added by operations so far
	unexpected []string
	logs       []string
}

type lanManager struct {
	host *netns.Host
	data string // its -data: the CA is in tls/ca.crt
	args []string
	proc *proc
	runs int
}

type master struct {
	id     string
	host   *netns.Host
	dir    string // holds allexmasterconfig.json, the socket and state/
	socket string
	proc   *proc
	runs   int
}

func newCluster(t *testing.T, lan *netns.LAN, bin string, p params) *cluster {
	var tag [3]byte
	_, _ = rand.Read(tag[:])
	c := &cluster{t: t, p: p, lan: lan, bin: bin, dir: t.TempDir(), token: "nemesis-" + hex.EncodeToString(tag[:]),
		prefix: "nem" + hex.EncodeToString(tag[:]) + "-", began: time.Now()}
	c.tokenFile = filepath.Join(c.dir, "token")
	if err := os.WriteFile(c.tokenFile, []byte(c.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lm := lan.Host("lm")
	c.lm = &lanManager{host: lm, data: filepath.Join(c.dir, "lm")}
	// Without -insecure the LAN manager serves HTTPS and makes its CA in
	// its data dir on the first start.
	c.lm.args = []string{"-addr", net.JoinHostPort(lm.IP, strconv.Itoa(lmPort)),
		"-data", c.lm.data, "-token-file", c.tokenFile, "-log-level", "info"}
	if p.lan == lanInsecure {
		c.lm.args = append(c.lm.args, "-insecure")
	}
	c.lm.args = append(c.lm.args, p.lmFlags...)
	c.admin = newAdmin(lm, lm.IP, lmPort, c.token)
	c.chk = newChecker(c.prefix, c.admin, sampleEvery)
	for _, id := range []string{"m1", "m2", "m3"} {
		m := &master{id: id, host: lan.Host(id), dir: filepath.Join(c.dir, id)}
		m.socket = filepath.Join(m.dir, "m.sock")
		c.chk.addSupervisor(m.socket, id, m.host, false)
		c.masters = append(c.masters, m)
	}
	// Runs before the LAN's cleanup (which kills whatever is left in the
	// namespaces): stop the sampler, the daemons, then stray copies.
	t.Cleanup(c.teardown)
	return c
}

// writeConfig writes a master's allexmasterconfig.json in dir. Over TLS
// its "token" is the join token (made by setup); otherwise it links over
// plain WebSockets with the shared token (with "laninsecure", a key
// masters from before TLS refuse).
func (c *cluster) writeConfig(dir, id string, h *netns.Host, socket string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	cfg := map[string]any{
		"lanmanageraddress": c.lan.Host("lm").IP,
		"lanmanagerport":    lmPort,
		"machineid":         id,
		"address":           h.IP,
		"portrangestart":    map[string]int{"tcp": tcpBase, "http": tcpBase + portsEach, "ws": tcpBase + 2*portsEach},
		"portrangesize":     portsEach,
		"socket":            socket,
		"statedir":          filepath.Join(dir, "state"),
		"modules": map[string]any{module: map[string]any{
			"command": c.childCommand(), "args": []string{"demochild"},
			"protocols": []string{"tcp"}, "readiness": "ports", "stoptimeout": "2s",
		}},
	}
	switch c.p.lan {
	case lanTLS:
		if c.joinToken == "" {
			c.t.Fatal("nemesis: a master's config written before the join token was made")
		}
		cfg["token"] = c.joinToken
	case lanInsecure:
		cfg["tokenfile"], cfg["laninsecure"] = c.tokenFile, true
	default:
		cfg["tokenfile"] = c.tokenFile
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "allexmasterconfig.json"), b, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// childCommand is the program of the children (see childBin).
func (c *cluster) childCommand() string {
	if p := filepath.Join(c.bin, childBin); fileExists(p) {
		return p
	}
	return filepath.Join(c.bin, "allexmaster")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// logPath names a new log file for a daemon's run.
func (c *cluster) logPath(name string, run int) string {
	p := filepath.Join(c.dir, fmt.Sprintf("%s.%d.log", name, run))
	c.logs = append(c.logs, p)
	return p
}

func (c *cluster) startLM() error {
	c.lm.runs++
	p, err := startProc(c.lm.host, "allexlanmanager", c.dir, c.logPath("lm", c.lm.runs), c.nice, filepath.Join(c.bin, "allexlanmanager"), c.lm.args...)
	if err != nil {
		return err
	}
	c.lm.proc = p
	return bounded(startBound, func() error {
		if !p.running() {
			return fmt.Errorf("allexlanmanager exited (%s):\n%s", exitErr(p.err), tail(p.log, 20))
		}
		if c.p.lan == lanTLS && !c.trusted {
			// The first start makes the CA; later ones keep it. The
			// checker is not sampling yet.
			caPEM, err := os.ReadFile(filepath.Join(c.lm.data, "tls", "ca.crt"))
			if err != nil {
				return fmt.Errorf("the LAN's CA: %w", err)
			}
			if err := c.admin.trust(caPEM); err != nil {
				return err
			}
			c.trusted = true
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.admin.needs(ctx)
		return err
	})
}

// makeJoinToken makes the masters' join token as an operator would:
// `allexlanmanager token create -role master -ttl 0` against the running
// LAN manager, run on its host (the root namespace has no route to the
// LAN), as its administrator (-token-file) trusting the CA in its data
// dir.
func (c *cluster) makeJoinToken() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), startBound)
	defer cancel()
	args := []string{"netns", "exec", c.lm.host.NS, filepath.Join(c.bin, "allexlanmanager"), "token", "create",
		"-lan", c.admin.url(), "-data", c.lm.data, "-token-file", c.tokenFile,
		"-role", "master", "-ttl", "0", "-description", "nemesis masters"}
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	tok := strings.TrimSpace(string(out))
	if err == nil && (tok == "" || strings.ContainsAny(tok, " \n")) {
		err = fmt.Errorf("unexpected output %q", out)
	}
	if err != nil {
		return "", fmt.Errorf("allexlanmanager token create: %w\n%s", err, stderr.Bytes())
	}
	return tok, nil
}

// startMaster starts m on its dir and waits until its socket answers.
func (c *cluster) startMaster(m *master) error {
	m.runs++
	p, err := startProc(m.host, m.id, m.dir, c.logPath(m.id, m.runs), c.nice, filepath.Join(c.bin, "allexmaster"), "-log-level", "info")
	if err != nil {
		return err
	}
	m.proc = p
	c.chk.setProc(m.socket, p)
	return waitSocket(p, m.socket)
}

// waitSocket waits until a master's machine socket accepts a connection:
// every version serves it, whatever it logs.
func waitSocket(p *proc, socket string) error {
	return bounded(startBound, func() error {
		if !p.running() {
			return fmt.Errorf("%s exited (%s):\n%s", p.name, exitErr(p.err), tail(p.log, 20))
		}
		conn, err := net.DialTimeout("unix", socket, time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// setup starts the LAN manager and the masters, starts the checker and
// adds the needs, and waits until each runs once, published.
func (c *cluster) setup() {
	if err := c.startLM(); err != nil {
		c.t.Fatal(err)
	}
	if c.p.lan == lanTLS {
		tok, err := c.makeJoinToken()
		if err != nil {
			c.t.Fatal(err)
		}
		c.joinToken = tok
	}
	for _, m := range c.masters {
		c.writeConfig(m.dir, m.id, m.host, m.socket)
	}
	for _, m := range c.masters {
		if err := c.startMaster(m); err != nil {
			c.t.Fatal(err)
		}
	}
	c.chk.start()
	started := time.Now()
	for i := 0; i < c.p.needs; i++ {
		name := fmt.Sprintf("%s%03d", c.prefix, i)
		if err := c.addNeed(name); err != nil {
			c.t.Fatal(err)
		}
	}
	err := bounded(2*time.Minute, func() error {
		if _, ok := c.chk.recovery(started, started, stableFor, okPick); !ok {
			return fmt.Errorf("not every need runs once and is published: %s", c.chk.why())
		}
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Logf("nemesis: %d needs run once each, published, %s after the first was added (with a second's check)", c.p.needs, time.Since(started).Round(time.Millisecond))
}

// addNeed adds a need and tells the checker once it is acknowledged.
func (c *cluster) addNeed(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	acked, err := c.admin.addNeed(ctx, name, module)
	if acked {
		c.chk.ack(name, time.Now())
	}
	return err
}

// revive restarts a daemon that exited when no operation meant it to,
// and says so in the verdict.
func (c *cluster) revive() {
	if !c.lm.proc.running() {
		c.unexpected = append(c.unexpected, fmt.Sprintf("allexlanmanager exited on its own (%s) before operation %d", exitErr(c.lm.proc.err), len(c.ops)+1))
		if err := c.startLM(); err != nil {
			c.t.Fatal(err)
		}
	}
	for _, m := range c.masters {
		if !m.proc.running() {
			c.unexpected = append(c.unexpected, fmt.Sprintf("master %s exited on its own (%s) before operation %d", m.id, exitErr(m.proc.err), len(c.ops)+1))
			if err := c.startMaster(m); err != nil {
				c.t.Fatal(err)
			}
		}
	}
}

// teardown stops the checker, then every daemon (the masters stop their
// children), then any copy still alive, frozen ones included.
func (c *cluster) teardown() {
	c.chk.stop()
	for _, m := range c.masters {
		if m.proc != nil {
			_ = m.proc.stop(20 * time.Second)
		}
	}
	if c.lm.proc != nil {
		_ = c.lm.proc.stop(20 * time.Second)
	}
	for _, k := range c.strays() {
		_ = syscall.Kill(-k.PID, syscall.SIGKILL)
	}
}

// strays lists every live copy of this run's instances now.
func (c *cluster) strays() []procKey {
	var out []procKey
	for _, cs := range c.chk.scan() {
		for _, cp := range cs {
			out = append(out, cp.procKey)
		}
	}
	return out
}

// logTails logs the end of every daemon's output.
func (c *cluster) logTails() {
	for _, p := range c.logs {
		c.t.Logf("---- %s (last 40 lines)\n%s", filepath.Base(p), tail(p, 40))
	}
}

// alive says whether the process k still runs (not a zombie, not a
// recycled pid).
func alive(k procKey) bool {
	st, err := procfs.ReadStat(k.PID)
	return err == nil && st.Live() && st.StartTime == k.Start
}

// bounded retries fn every 50ms until it succeeds or d passes.
func bounded(d time.Duration, fn func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sinceStart renders t as an offset from the start of the run.
func (c *cluster) sinceStart(t time.Time) string {
	return "+" + t.Sub(c.began).Round(100*time.Millisecond).String()
}
