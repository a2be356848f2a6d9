package lanetcd_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/internal/etcdtest"
	"github.com/allex-go/allex/internal/netns"
	"github.com/allex-go/allex/lanmanager/adminclient"
)

// netLAN is an etcd LAN in network namespaces: etcd members on hosts
// e0…, LAN managers and masters on hosts of their own. The test process
// reaches it from host e0.
type netLAN struct {
	lan     *netns.LAN
	etcd    []*etcdtest.Member
	store   string
	from    *netns.Host
	members []*netns.Host
	first   *lm // the first LAN manager started, whose CA all share
}

// newNetLAN builds the namespaces (the etcd hosts and others) and starts
// one etcd member on each etcd host.
func newNetLAN(t *testing.T, prefix string, etcdHosts int, others ...string) *netLAN {
	t.Helper()
	var names []string
	for i := range etcdHosts {
		names = append(names, fmt.Sprintf("e%d", i))
	}
	n := &netLAN{lan: netns.NewLAN(t, append(names, others...)...)}
	var at []etcdtest.Where
	var eps []string
	for _, name := range names {
		h := n.lan.Host(name)
		n.members = append(n.members, h)
		at = append(at, etcdtest.Where{IP: h.IP, Command: h.Command})
		eps = append(eps, net.JoinHostPort(h.IP, "2379"))
	}
	n.from = n.members[0]
	n.etcd = etcdtest.ClusterAt(t, at, func(ctx context.Context, addr string) (net.Conn, error) {
		return n.from.DialContext(ctx, "tcp", addr)
	})
	n.store = "etcd://" + strings.Join(eps, ",") + prefix
	return n
}

// startLM starts a LAN manager on host name, listening on its port 23552.
func (n *netLAN) startLM(t *testing.T, name string, extra ...string) *lm {
	t.Helper()
	h := n.lan.Host(name)
	dir := e2e.ShortDir(t)
	addr := net.JoinHostPort(h.IP, "23552")
	l := &lm{url: "https://" + addr, dir: dir, host: h, dial: n.from.DialContext}
	l.args = append([]string{"-addr", addr, "-advertise", l.url, "-data", filepath.Join(dir, "data"),
		"-token", token, "-store", n.store, "-log-level", "debug"}, extra...)
	n.run(t, l)
	if n.first == nil {
		n.first = l
	}
	sameCA(t, n.first, l)
	return l
}

// run (re)starts l on its host and waits until it stands by.
func (n *netLAN) run(t *testing.T, l *lm) {
	t.Helper()
	cmd := l.host.Command(e2e.Bins.LAN, l.args...)
	cmd.Dir = l.dir
	l.Proc = e2e.StartCmd(t, cmd)
	l.WaitOutput("standing by for the leadership", 30*time.Second)
	l.learnCA(t)
}

// client is an admin client of l, dialling from the test's host.
func (n *netLAN) client(l *lm) *adminclient.Client { return l.client() }

// startMaster starts master id on host name, given the LAN managers'
// addresses in the order of lms.
func (n *netLAN) startMaster(t *testing.T, name, id string, lms ...*lm) *e2e.Proc {
	t.Helper()
	h := n.lan.Host(name)
	var addrs []string
	for _, l := range lms {
		addrs = append(addrs, l.addr())
	}
	join := lms[0].joinToken(t)
	dir := e2e.ShortDir(t)
	e2e.WriteFile(t, dir, "allexmasterconfig.json", fmt.Sprintf(
		`{"lanmanageraddress":%q,"token":%q,"machineid":%q,"address":%q,`+
			`"portrangestart":{"tcp":15000,"http":16000,"ws":17000},"socket":%q,"statedir":%q,"modules":{%s}}`,
		strings.Join(addrs, ","), join, id, h.IP, filepath.Join(dir, "m.sock"), filepath.Join(dir, "state"), e2e.DemoModule("demo")))
	cmd := h.Command(e2e.Bins.Master, "-log-level", "debug")
	cmd.Dir = dir
	m := e2e.StartCmd(t, cmd)
	m.WaitOutput("allexmaster running", 30*time.Second)
	return m
}

// services lists the published services' pids by instance through c.
func services(c *adminclient.Client) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	svcs, err := c.Services(ctx, "", "")
	out := map[string]int{}
	for _, s := range svcs {
		out[s.Instance] = s.PID
	}
	return out, err
}
