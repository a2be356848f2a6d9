package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/allex-go/allex/agent/lancreds"
	"github.com/allex-go/allex/agent/lanlink"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// module is the one module every simulated master serves.
const module = "svc"

// capacityEvery is how often, at most, a master reports a capacity change
// that does not change whether it is full (as agent/needs does).
const capacityEvery = time.Second

// portRange is the ports per protocol a master announces free, as a
// default master's port office has.
const portRange = 1000

// counters are a worker's frame counts, summed over its masters.
type counters struct {
	declines, grants, approved, stops, errors, listenErrors, queueFull atomic.Int64
}

// masterAddr is master i's address: 127.(1+i/250).(i%250).1, so that no
// master shares 127.0.0.1 with the LAN manager (Linux routes 127/8 to lo).
func masterAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, byte(1 + i/250), byte(i % 250), 1})
}

// masterID is master i's machine id.
func masterID(i int) string { return fmt.Sprintf("sim-%05d", i) }

// simCopy is a copy a master holds: its grant's epoch and its listeners.
type simCopy struct {
	epoch uint64
	fds   []int
}

// master is one simulated allexmaster: a real link session, real
// listeners for its copies, and no children.
type master struct {
	idx    int
	ip     netip.Addr
	max    int
	policy Policy
	acc    *acceptor
	n      *counters
	// lost is called once when the link ends without drop or close.
	lost func(error)

	conn    *websocket.Conn
	timings lanwire.Timings
	start   time.Time
	// out is the session's queue, written by writeLoop alone: as in
	// agent/lanlink, the reader never waits for the network.
	out  chan []byte
	done chan struct{} // closed by drop

	mu      sync.Mutex
	copies  map[string]*simCopy
	ended   bool // dropped or closed: a read error is expected
	capLast int
	capSent time.Time
	capDue  bool
}

func newMaster(idx, maxProcs int, p Policy, acc *acceptor, n *counters, lost func(error)) *master {
	return &master{idx: idx, ip: masterAddr(idx), max: maxProcs, policy: p, acc: acc, n: n, lost: lost,
		copies: map[string]*simCopy{}, capLast: -1,
		out: make(chan []byte, lanlink.QueueSize), done: make(chan struct{})}
}

func (m *master) capacity() lanwire.Capacity {
	free := map[string]int{"tcp": portRange - len(m.copies), "http": portRange, "ws": portRange}
	return lanwire.Capacity{MaxProcesses: m.max, Running: len(m.copies), FreePorts: free}
}

// dialer dials from the master's address.
func (m *master) dialer() *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: m.ip.AsSlice()}}
}

// lanBase is the base URL of the LAN manager whose link URL (wss) is
// link, where the master joins.
func lanBase(link string) string {
	return "https://" + strings.TrimSuffix(strings.TrimPrefix(link, "wss://"), lanwire.Path)
}

// join gets the master its certificate as allexmaster does
// (agent/lancreds): it checks in the handshake that the LAN manager's CA
// is the one the token names, then posts a CSR for a new key with the
// token's secret. It returns the link's TLS configuration: that CA, and
// the certificate, whose CN is the master's machine id.
func (m *master) join(ctx context.Context, url string, tok lanpki.Token) (*tls.Config, error) {
	cert, ca, err := lancreds.Join(ctx, url, tok, masterID(m.idx), m.dialer().DialContext)
	if err != nil {
		return nil, fmt.Errorf("master %d: join: %w", m.idx, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return lanpki.ClientConfig(pool, &cert), nil
}

// connect dials the LAN manager from the master's address (over TLS
// when cfg is set: its certificate is its credential; else header
// carries the token), says hello and waits for the welcome; then the
// session runs on its own goroutines.
func (m *master) connect(ctx context.Context, url string, header http.Header, cfg *tls.Config) error {
	d := websocket.Dialer{
		HandshakeTimeout: 30 * time.Second,
		NetDialContext:   m.dialer().DialContext,
		TLSClientConfig:  cfg,
	}
	conn, _, err := d.DialContext(ctx, url, header)
	if err != nil {
		return fmt.Errorf("master %d: dial: %w", m.idx, err)
	}
	conn.SetReadLimit(lanwire.MaxFrameSize)
	m.conn, m.start = conn, time.Now()
	if err := m.handshake(); err != nil {
		conn.Close()
		return fmt.Errorf("master %d: %w", m.idx, err)
	}
	go m.readLoop()
	go m.writeLoop()
	return nil
}

func (m *master) handshake() error {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	m.mu.Lock()
	h := lanwire.Hello{MachineID: masterID(m.idx), Identity: hex.EncodeToString(id), Address: m.ip.String(),
		Modules: []string{module}, Capacity: m.capacity(), Version: "scale-sim", Protocol: lanwire.Placement}
	m.mu.Unlock()
	b, err := lanwire.Encode(lanwire.TypeHello, &h)
	if err == nil {
		_ = m.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		err = m.conn.WriteMessage(websocket.TextMessage, b)
	}
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	_ = m.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, b, err = m.conn.ReadMessage()
	if err != nil {
		return fmt.Errorf("welcome: %w", err)
	}
	typ, p, err := lanwire.Decode(b)
	if err != nil {
		return fmt.Errorf("welcome: %w", err)
	}
	w, ok := p.(*lanwire.Welcome)
	if !ok {
		return fmt.Errorf("got %q, want welcome: %s", typ, b)
	}
	m.timings = w.Timings
	return nil
}

// writeLoop sends the queued frames, and pings every heartbeat with the
// send time, as a real master does to renew its lease.
func (m *master) writeLoop() {
	hb := m.timings.Heartbeat()
	t := time.NewTicker(hb)
	defer t.Stop()
	var err error
	for err == nil {
		select {
		case <-m.done:
			return
		case b := <-m.out:
			_ = m.conn.SetWriteDeadline(time.Now().Add(3 * hb))
			err = m.conn.WriteMessage(websocket.TextMessage, b)
		case <-t.C:
			err = m.conn.WriteControl(websocket.PingMessage, lanwire.PingPayload(time.Since(m.start)), time.Now().Add(3*hb))
		}
	}
	// The reader sees the closed connection and reports the session lost.
	m.conn.Close()
}

func (m *master) readLoop() {
	readWait := 3 * m.timings.Heartbeat()
	extend := func() { _ = m.conn.SetReadDeadline(time.Now().Add(readWait)) }
	m.conn.SetPongHandler(func(string) error { extend(); return nil })
	m.conn.SetPingHandler(func(data string) error {
		extend()
		_ = m.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(readWait))
		return nil
	})
	for {
		extend()
		_, b, err := m.conn.ReadMessage()
		if err != nil {
			m.readFailed(err)
			return
		}
		_, p, err := lanwire.Decode(b)
		if err != nil {
			m.n.errors.Add(1)
			fmt.Fprintf(os.Stderr, "master %d: bad frame: %v\n", m.idx, err)
			continue
		}
		m.handle(p)
	}
}

// readFailed ends a session the bench did not end: the master acts dead
// (no reconnect), so the run reports it rather than hides it.
func (m *master) readFailed(err error) {
	if _, first := m.drop(); first {
		m.lost(err)
	}
}

func (m *master) handle(p any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch f := p.(type) {
	case *lanwire.Grant:
		m.n.grants.Add(1)
		if why := m.policy.Decline(f.Need, View{MaxProcesses: m.max, Running: len(m.copies)}); why != "" && m.copies[f.Need.Instance] == nil {
			m.n.declines.Add(1)
			m.sendLocked(lanwire.TypeDecline, &lanwire.Decline{Instance: f.Need.Instance, Epoch: f.Epoch, Reason: why})
			return
		}
		m.grant(f)
	case *lanwire.Approved:
		m.n.approved.Add(1)
	case *lanwire.Rejected:
		m.stop(f.Instance, f.Epoch, "rejected: "+f.Reason)
	case *lanwire.Stop:
		m.stop(f.Instance, f.Epoch, "stopped: "+f.Reason)
	case *lanwire.Error:
		m.n.errors.Add(1)
		fmt.Fprintf(os.Stderr, "master %d: LAN manager refused a %s frame: %s\n", m.idx, f.Ref, f.Message)
	}
}

// sendLocked queues a frame (m.mu is held). A full queue drops it, as
// agent/lanlink's Send does, and counts it.
func (m *master) sendLocked(typ string, payload any) {
	b, err := lanwire.Encode(typ, payload)
	if err != nil {
		m.n.errors.Add(1)
		fmt.Fprintf(os.Stderr, "master %d: encode %s: %v\n", m.idx, typ, err)
		return
	}
	select {
	case m.out <- b:
	default:
		m.n.queueFull.Add(1)
	}
}

// grant opens a listener per declared protocol on the master's address
// and reports the copy spawned on them.
func (m *master) grant(g *lanwire.Grant) {
	n := g.Need
	if c := m.copies[n.Instance]; c != nil {
		if c.epoch != g.Epoch {
			m.sendLocked(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: n.Instance, Epoch: g.Epoch, Error: "an earlier copy is still here"})
		}
		return
	}
	c := &simCopy{epoch: g.Epoch}
	ports := lanwire.Ports{}
	for _, proto := range n.Protocols {
		fd, port, err := m.acc.listen(m.ip)
		if err != nil {
			m.n.listenErrors.Add(1)
			m.closeCopy(c)
			m.sendLocked(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: n.Instance, Epoch: g.Epoch, Error: err.Error()})
			return
		}
		c.fds = append(c.fds, fd)
		ports[proto] = port
	}
	m.copies[n.Instance] = c
	m.reportCapacity()
	m.sendLocked(lanwire.TypeSpawned, &lanwire.Spawned{Instance: n.Instance, Epoch: g.Epoch, PID: os.Getpid(), Ports: ports, StartedAt: time.Now()})
}

// stop ends the copy of that epoch and reports it down; a copy not held
// is confirmed down at once, as a real master does.
func (m *master) stop(inst string, epoch uint64, why string) {
	m.n.stops.Add(1)
	c := m.copies[inst]
	if c != nil && c.epoch != epoch {
		return
	}
	if c != nil {
		m.closeCopy(c)
		delete(m.copies, inst)
		m.reportCapacity()
	}
	m.sendLocked(lanwire.TypeDown, &lanwire.Down{Instance: inst, Epoch: epoch, PID: os.Getpid(), Reason: why})
}

func (m *master) closeCopy(c *simCopy) {
	for _, fd := range c.fds {
		m.acc.close(fd)
	}
	c.fds = nil
}

// reportCapacity sends the running count: at once when whether the
// master is full changed, else at most every capacityEvery, the latest
// last. m.mu is held.
func (m *master) reportCapacity() {
	c := m.capacity()
	if c.Running == m.capLast {
		return
	}
	full := func(running int) bool { return m.max > 0 && running >= m.max }
	wait := time.Until(m.capSent.Add(capacityEvery))
	if full(c.Running) == full(m.capLast) && wait > 0 {
		if !m.capDue {
			m.capDue = true
			time.AfterFunc(wait, func() {
				m.mu.Lock()
				defer m.mu.Unlock()
				m.capDue = false
				if !m.ended {
					m.reportCapacity()
				}
			})
		}
		return
	}
	m.capLast, m.capSent = c.Running, time.Now()
	m.sendLocked(lanwire.TypeCapacity, &c)
}

// drop is the master's process dying: its children go (the keeper kills
// them) and its connection ends without a close frame. It returns how
// many copies it held, and whether it was alive until now.
func (m *master) drop() (int, bool) {
	m.mu.Lock()
	first := !m.ended
	if first {
		close(m.done)
	}
	m.ended = true
	n := len(m.copies)
	for inst, c := range m.copies {
		m.closeCopy(c)
		delete(m.copies, inst)
	}
	m.mu.Unlock()
	if m.conn != nil {
		m.conn.Close()
	}
	return n, first
}
