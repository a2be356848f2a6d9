// Package etcdtest runs real etcd members for tests: the etcd binary
// (Debian's etcd-server; scripts/test installs it) on loopback ports, in
// a temporary directory, stopped when the test ends. Tests that need it
// are skipped, saying why, where the binary is missing.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Member is one running etcd.
type Member struct {
	Name     string
	Client   string // http://127.0.0.1:port
	peer     string
	dir      string
	cmd      *exec.Cmd
	exited   chan struct{}
	cluster  string
	logPath  string
	testingT testing.TB
	command  func(name string, args ...string) *exec.Cmd
	bin      string
}

// Where places one member elsewhere than on loopback: on IP (ports 2379
// and 2380, which its own network namespace leaves free), run through
// Command (e.g. netns.Host.Command).
type Where struct {
	IP      string
	Command func(name string, args ...string) *exec.Cmd
}

// Cluster starts n members on loopback forming one cluster and waits
// until it answers.
func Cluster(t testing.TB, n int) []*Member {
	t.Helper()
	return ClusterAt(t, make([]Where, n), nil)
}

// ClusterAt starts a member at each place (loopback for a zero Where)
// and waits until the cluster answers, dialling it with dial when set.
func ClusterAt(t testing.TB, at []Where, dial func(ctx context.Context, addr string) (net.Conn, error)) []*Member {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd not installed (apt-get install etcd-server; scripts/test does)")
	}
	dir := t.TempDir()
	ms := make([]*Member, len(at))
	var initial []string
	for i, w := range at {
		client, peer := freeAddr(t), freeAddr(t)
		if w.IP != "" {
			client, peer = net.JoinHostPort(w.IP, "2379"), net.JoinHostPort(w.IP, "2380")
		}
		ms[i] = &Member{Name: fmt.Sprintf("m%d", i), Client: "http://" + client, peer: "http://" + peer,
			dir: filepath.Join(dir, fmt.Sprint(i)), testingT: t, command: w.Command}
		if ms[i].command == nil {
			ms[i].command = exec.Command
		}
		ms[i].logPath = ms[i].dir + ".log"
		initial = append(initial, ms[i].Name+"="+ms[i].peer)
	}
	for _, m := range ms {
		m.cluster = strings.Join(initial, ",")
		m.start(t, bin, "new")
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.Kill()
		}
	})
	cli := ClientVia(t, Endpoints(ms), dial)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, err := cli.Get(ctx, "health"); err == nil {
			return ms
		} else if ctx.Err() != nil {
			t.Fatalf("etcd cluster not ready: %v (logs in %s)", err, dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *Member) start(t testing.TB, bin, state string) {
	t.Helper()
	m.bin = bin
	log, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	m.cmd = m.command(bin, "--name", m.Name, "--data-dir", m.dir,
		"--listen-client-urls", m.Client, "--advertise-client-urls", m.Client,
		"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
		"--initial-cluster", m.cluster, "--initial-cluster-state", state,
		"--heartbeat-interval", "50", "--election-timeout", "500")
	m.cmd.Stdout, m.cmd.Stderr = log, log
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(m.cmd, m.exited)
}

// Kill stops the member at once (SIGKILL).
func (m *Member) Kill() {
	if m.cmd != nil && m.cmd.Process != nil {
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
}

// Restart starts a killed member again on its data.
func (m *Member) Restart() {
	m.testingT.Helper()
	m.start(m.testingT, m.bin, "existing")
}

// Endpoints lists the members' client URLs.
func Endpoints(ms []*Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Client)
	}
	return out
}

// Client returns a client of endpoints, closed when the test ends.
func Client(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	return ClientVia(t, endpoints, nil)
}

// ClientVia is Client dialling with dial when set (from inside a network
// namespace, say).
func ClientVia(t testing.TB, endpoints []string, dial func(ctx context.Context, addr string) (net.Conn, error)) *clientv3.Client {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, MaxDelay: time.Second}, MinConnectTimeout: time.Second,
	})}
	if dial != nil {
		opts = append(opts, grpc.WithContextDialer(dial))
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), DialOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
