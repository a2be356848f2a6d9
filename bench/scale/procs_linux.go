package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// buildLanManager builds cmd/allexlanmanager of this module into dir.
func buildLanManager(ctx context.Context, dir string) (string, error) {
	root, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root (run from the allex repository): %w", err)
	}
	out := filepath.Join(dir, "allexlanmanager")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/allexlanmanager")
	cmd.Dir = strings.TrimSpace(string(root))
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/allexlanmanager: %w\n%s", err, b)
	}
	return out, nil
}

// lanManager is the running allexlanmanager.
type lanManager struct {
	cmd *exec.Cmd
	// url is https:// (http:// with -insecure); token is its own, the
	// admin's.
	url, token string
	// ca is the LAN's CA, read from its data dir once it made it; nil
	// with -insecure.
	ca      *x509.CertPool
	dataDir string
	log     string
	exited  chan struct{}
}

func (l *lanManager) pid() int { return l.cmd.Process.Pid }

// linkURL is the WebSocket URL masters dial: wss, or ws with -insecure.
func (l *lanManager) linkURL() string { return "ws" + strings.TrimPrefix(l.url, "http") + lanwire.Path }

// transport checks the LAN manager's certificate against its CA, as
// allexctl -ca does.
func (l *lanManager) transport() http.RoundTripper {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if l.ca != nil {
		tr.TLSClientConfig = lanpki.ClientConfig(l.ca, nil)
	}
	return tr
}

// adminClient calls the admin API with the LAN manager's own token.
func (l *lanManager) adminClient() *adminclient.Client {
	c := adminclient.New(l.url, l.token)
	if l.ca != nil {
		c.WithCA(l.ca)
	}
	return c
}

// masterToken is what the simulated masters link with: a join token made
// on the LAN manager (each master joins with it, as allexmaster does), or
// with -insecure the LAN manager's own token.
func (l *lanManager) masterToken(ctx context.Context) (string, error) {
	if l.ca == nil {
		return l.token, nil
	}
	out, err := l.adminClient().CreateToken(ctx, adminapi.RoleMaster, time.Hour, "scale bench masters")
	if err != nil {
		return "", fmt.Errorf("make a master token: %w", err)
	}
	return out.Token, nil
}

// startLanManager starts bin on a free loopback port with a fresh data
// dir in dir, a new token and the default fencing flags, pinned to cpus;
// its log goes to dir/lanmanager.log. flags are added to its command line. A negative nice lets it win its
// CPU from other processes on a shared machine. It speaks TLS, as by
// default, unless insecure (-insecure: plain HTTP and WebSockets).
func startLanManager(bin, dir string, cpus []int, nice int, flags []string, insecure bool, within time.Duration) (*lanManager, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	scheme := "https"
	if insecure {
		scheme = "http"
		flags = append([]string{"-insecure"}, flags...)
	}
	l := &lanManager{url: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), token: hex.EncodeToString(tok),
		dataDir: filepath.Join(dir, "data"), log: filepath.Join(dir, "lanmanager.log"), exited: make(chan struct{})}
	logf, err := os.Create(l.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{bin, "-addr", fmt.Sprintf("127.0.0.1:%d", port),
		"-data", l.dataDir, "-token", l.token}, flags...)
	cmd, err := pinned(cpus, nice, "exec", args...)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	l.cmd = cmd
	go func() { _ = cmd.Wait(); close(l.exited) }()
	if err := l.waitHealthy(within); err != nil {
		l.stop()
		return nil, err
	}
	// Checked on the process itself: the pin is what makes the numbers
	// the LAN manager's on one core.
	if got, err := cpusAllowed(l.pid()); err != nil || got != formatCPUs(cpus) {
		l.stop()
		return nil, fmt.Errorf("allexlanmanager runs on CPUs %q (%v), want %s", got, err, formatCPUs(cpus))
	}
	if got, err := niceOf(l.pid()); err != nil || got != nice {
		l.stop()
		return nil, fmt.Errorf("allexlanmanager runs at nice %d (%v), want %d", got, err, nice)
	}
	return l, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHealthy polls /healthz until it answers, the process exits or
// within has passed. Over TLS it first waits for the CA the LAN manager
// makes in its data dir on first start, and checks its certificate by it.
func (l *lanManager) waitHealthy(within time.Duration) error {
	deadline := time.Now().Add(within)
	overTLS := strings.HasPrefix(l.url, "https://")
	var c *http.Client
	defer func() {
		if c != nil {
			c.CloseIdleConnections()
		}
	}()
	for time.Now().Before(deadline) {
		select {
		case <-l.exited:
			return fmt.Errorf("allexlanmanager exited at start (%v); see %s", l.cmd.ProcessState, l.log)
		default:
		}
		if overTLS && l.ca == nil {
			if b, err := os.ReadFile(filepath.Join(l.dataDir, "tls", "ca.crt")); err == nil {
				if ca, err := lanpki.ParseCertPEM(b); err == nil {
					l.ca = x509.NewCertPool()
					l.ca.AddCert(ca)
				}
			}
			if l.ca == nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
		}
		if c == nil {
			c = &http.Client{Timeout: time.Second, Transport: l.transport()}
		}
		if resp, err := c.Get(l.url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("allexlanmanager not healthy within %v; see %s", within, l.log)
}

// stop SIGTERMs the LAN manager and SIGKILLs it after 20 s.
func (l *lanManager) stop() {
	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.exited:
	case <-time.After(20 * time.Second):
		_ = l.cmd.Process.Kill()
		<-l.exited
	}
}

// worker is a running worker process and what it said.
type worker struct {
	first, count int
	cmd          *exec.Cmd
	stdin        io.WriteCloser
	ready        chan struct{}
	dropped      chan string
	lost         chan string
	stats        string
	done         chan struct{} // its stdout ended
}

func (w *worker) pid() int { return w.cmd.Process.Pid }

// startWorker starts a worker process for masters [first, first+count),
// which link to lm with token (LANManager.masterToken).
func startWorker(cpus []int, lm *lanManager, token string, first, count, maxProcs int, dialWithin time.Duration) (*worker, error) {
	cmd, err := pinned(cpus, 0, "worker", "-url", lm.linkURL(), "-token", token,
		"-first", fmt.Sprint(first), "-count", fmt.Sprint(count), "-max", fmt.Sprint(maxProcs), "-dial-timeout", dialWithin.String())
	if err != nil {
		return nil, err
	}
	w := &worker{first: first, count: count, cmd: cmd, ready: make(chan struct{}),
		dropped: make(chan string, 1), lost: make(chan string, count), done: make(chan struct{})}
	if w.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	go w.read(out)
	return w, nil
}

// read takes the worker's lines until its stdout ends.
func (w *worker) read(out io.Reader) {
	defer close(w.done)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		word, rest, _ := strings.Cut(line, " ")
		switch word {
		case "ready":
			close(w.ready)
		case "dropped":
			w.dropped <- rest
		case "lost":
			select {
			case w.lost <- rest:
			default:
			}
		case "stats":
			w.stats = rest
		default:
			fmt.Fprintf(os.Stderr, "worker %d: unexpected line %q\n", w.first, line)
		}
	}
}

// drop asks the worker to kill master i and returns its answer.
func (w *worker) drop(i int, within time.Duration) (string, error) {
	if _, err := fmt.Fprintf(w.stdin, "drop %d\n", i); err != nil {
		return "", err
	}
	select {
	case s := <-w.dropped:
		return s, nil
	case <-w.done:
		return "", errors.New("worker exited")
	case <-time.After(within):
		return "", fmt.Errorf("worker did not drop master %d within %v", i, within)
	}
}

// stop ends the worker (its masters close their links) and waits for
// its counts; it is killed after within.
func (w *worker) stop(within time.Duration) {
	_ = w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(within):
		_ = w.cmd.Process.Kill()
		<-w.done
	}
	_ = w.cmd.Wait()
}
