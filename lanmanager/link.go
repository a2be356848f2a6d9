package lanmanager

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/allex-go/allex/internal/tcpcheck"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"
)

// sendQueue bounds the frames waiting for one master; a master that falls
// this far behind is disconnected instead of growing memory.
const sendQueue = 4096

const writeTimeout = 10 * time.Second

// session is one master link. Fields below conn are guarded by Server.mu.
type session struct {
	id        string
	conn      *websocket.Conn
	out       chan []byte
	done      chan struct{}
	closeOnce sync.Once

	machineID string
	address   string
	modules   map[string]bool
	live      bool
	lastOffer string
	offered   bool
}

func (sess *session) close() { sess.closeOnce.Do(func() { close(sess.done) }) }

func (sess *session) send(b []byte, log hclog.Logger) {
	select {
	case <-sess.done:
	case sess.out <- b:
	default:
		log.Warn("master is not reading its link; disconnecting", "machine", sess.machineID)
		sess.close()
	}
}

// writeLoop owns all data writes to the connection and the server pings.
func (s *Server) writeLoop(sess *session) {
	defer s.wg.Done()
	defer sess.conn.Close()
	tick := time.NewTicker(s.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case b := <-sess.out:
			_ = sess.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := sess.conn.WriteMessage(websocket.TextMessage, b); err != nil {
				sess.close()
				return
			}
		case <-tick.C:
			if err := sess.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				sess.close()
				return
			}
		case <-sess.done:
			// Flush what was queued before the close (a final error or stop).
			for {
				select {
				case b := <-sess.out:
					_ = sess.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
					if sess.conn.WriteMessage(websocket.TextMessage, b) != nil {
						return
					}
				default:
					_ = sess.conn.WriteControl(websocket.CloseMessage,
						websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
					return
				}
			}
		}
	}
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) == 1
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) handleLink(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	up := websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// Masters are not browsers; Origin carries no meaning here and
		// the bearer token is the authentication.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the client.
	}
	conn.SetReadLimit(lanwire.MaxFrameSize)
	sess := &session{id: newID(), conn: conn, out: make(chan []byte, sendQueue), done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = conn.Close()
		return
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()
	go s.writeLoop(sess)
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess)
		s.disconnectLocked(sess)
		s.mu.Unlock()
		sess.close()
	}()
	s.readLoop(sess, r.RemoteAddr)
}

func (s *Server) extendDeadline(conn *websocket.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(3 * s.cfg.Heartbeat))
}

func (s *Server) readLoop(sess *session, remote string) {
	conn := sess.conn
	s.extendDeadline(conn)
	conn.SetPongHandler(func(string) error { s.extendDeadline(conn); return nil })
	conn.SetPingHandler(func(data string) error {
		s.extendDeadline(conn)
		_ = conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeTimeout))
		return nil
	})
	go func() {
		// Unblock the read when the session is closed from elsewhere.
		<-sess.done
		_ = conn.SetReadDeadline(time.Now())
	}()

	_, data, err := conn.ReadMessage()
	if err != nil {
		s.log.Debug("link closed before hello", "remote", remote, "error", err)
		return
	}
	typ, p, err := lanwire.Decode(data)
	if err == nil && typ != lanwire.TypeHello {
		err = fmt.Errorf("first frame must be hello, got %q", typ)
	}
	if err != nil {
		s.mu.Lock()
		s.sendError(sess, typ, err)
		s.mu.Unlock()
		sess.close()
		return
	}
	s.mu.Lock()
	s.onHelloLocked(sess, p.(*lanwire.Hello))
	s.mu.Unlock()

	for {
		// Extend before reading, not after handling: a frame handled
		// slowly (lock contention, store syncs) must not use up the next
		// read's budget, whose frames and pings may be waiting already;
		// a passed deadline fails the read without looking at them.
		s.extendDeadline(conn)
		mt, data, err := conn.ReadMessage()
		if err != nil {
			s.log.Info("master link closed", "machine", sess.machineID, "error", err)
			return
		}
		s.handleFrame(sess, mt, data)
	}
}

func (s *Server) handleFrame(sess *session, mt int, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !sess.live {
		return
	}
	if m := s.machines[sess.machineID]; m != nil {
		m.lastSeen = time.Now()
	}
	if mt != websocket.TextMessage {
		s.sendError(sess, "", errors.New("frames are JSON text messages"))
		return
	}
	typ, p, err := lanwire.Decode(data)
	if err != nil {
		s.sendError(sess, typ, err)
		return
	}
	switch f := p.(type) {
	case *lanwire.Claim:
		s.onClaimLocked(sess, f)
	case *lanwire.Spawned:
		s.onSpawnedLocked(sess, f)
	case *lanwire.SpawnFailed:
		s.onSpawnFailedLocked(sess, f)
	case *lanwire.Down:
		s.onDownLocked(sess, f)
	case *lanwire.Capacity:
		m := s.machineLocked(sess.machineID)
		wasFull := m.capacity.Full()
		m.capacity = *f
		// Lists only depend on whether the machine is full; masters
		// report capacity after every start and exit.
		if m.capacity.Full() != wasFull {
			s.reofferLocked()
		}
	case *lanwire.Hello:
		s.sendError(sess, typ, errors.New("hello already received on this link"))
	default:
		s.sendError(sess, typ, fmt.Errorf("%q frames are sent by the LAN manager, not by masters", typ))
	}
}

func (s *Server) onHelloLocked(sess *session, h *lanwire.Hello) {
	sess.machineID, sess.address = h.MachineID, h.Address
	sess.modules = map[string]bool{}
	for _, mod := range h.Modules {
		sess.modules[mod] = true
	}
	m := s.machineLocked(h.MachineID)
	if old := m.sess; old != nil {
		s.log.Info("new session replaces the old one", "machine", h.MachineID)
		s.disconnectLocked(old)
		old.close()
	}
	if m.graceTimer != nil {
		m.graceTimer.Stop()
		m.graceTimer = nil
	}
	m.graceGen++
	m.sess, m.address, m.capacity, m.lastSeen = sess, h.Address, h.Capacity, time.Now()
	sess.live = true
	s.log.Info("master connected", "machine", h.MachineID, "address", h.Address, "modules", h.Modules, "running", len(h.Running))
	s.sendLocked(sess, lanwire.TypeWelcome, &lanwire.Welcome{
		SessionID:   sess.id,
		HeartbeatMS: s.cfg.Heartbeat.Milliseconds(),
		GraceMS:     s.cfg.Grace.Milliseconds(),
	})

	reported := map[string]bool{}
	for _, r := range h.Running {
		if reported[r.Instance] {
			continue
		}
		reported[r.Instance] = true
		s.reconcileLocked(sess, r)
	}
	for _, inst := range s.serviceInstancesLocked(h.MachineID) {
		if !reported[inst] {
			s.serviceDownLocked(inst, "not running on its master after reconnect")
		}
	}
	// Grants of this machine that were not reported running belong to a
	// previous session whose spawn did not survive.
	for _, ns := range s.needs {
		if ns.grantee != nil && ns.grantee != sess && ns.grantee.machineID == h.MachineID {
			s.revokeLocked(ns)
		}
	}
	s.reofferLocked()
}

func (s *Server) reconcileLocked(sess *session, r lanwire.RunningService) {
	if sv := s.svcs[r.Instance]; sv != nil {
		if sv.Record.MachineID == sess.machineID && sv.Record.Module == r.Module {
			sv2 := *sv
			sv2.Record.PID, sv2.Record.Ports, sv2.Record.Address = r.PID, r.Ports, sess.address
			if !r.StartedAt.IsZero() {
				sv2.Record.StartedAt = r.StartedAt
			}
			if err := s.store.PutService(sv2); err != nil {
				s.log.Error("cannot store service", "instance", r.Instance, "error", err)
				return
			}
			old := sv.Record
			*sv = sv2
			if old.PID != sv2.Record.PID {
				// The master restarted the child while the link was down:
				// watchers see the old process go and the new one come.
				s.log.Info("service restarted by its master while unlinked", "instance", r.Instance, "pid", old.PID, "newpid", r.PID)
				s.emitLocked(adminapi.EventDown, old)
				s.emitLocked(adminapi.EventUp, sv2.Record)
			}
			return
		}
		if sv.Record.MachineID == sess.machineID {
			// Same instance, other module: the record is wrong, not the need.
			s.serviceDownLocked(r.Instance, "master runs it as module "+r.Module)
			s.sendLocked(sess, lanwire.TypeStop, &lanwire.Stop{Instance: r.Instance, Reason: fmt.Sprintf("instance is module %q, not %q", sv.Need.Module, r.Module)})
			return
		}
		s.sendLocked(sess, lanwire.TypeStop, &lanwire.Stop{Instance: r.Instance, Reason: "service runs on machine " + sv.Record.MachineID})
		return
	}
	ns := s.needs[r.Instance]
	switch {
	case ns == nil:
		s.sendLocked(sess, lanwire.TypeStop, &lanwire.Stop{Instance: r.Instance, Reason: "no such need"})
	case ns.st.Need.Module != r.Module:
		s.sendLocked(sess, lanwire.TypeStop, &lanwire.Stop{Instance: r.Instance, Reason: fmt.Sprintf("need is module %q, not %q", ns.st.Need.Module, r.Module)})
	case ns.grantee != nil && ns.grantee.live && ns.grantee.machineID != sess.machineID:
		s.sendLocked(sess, lanwire.TypeStop, &lanwire.Stop{Instance: r.Instance, Reason: "need is granted to machine " + ns.grantee.machineID})
	case !ns.st.Need.Allows(sess.machineID, sess.address):
		s.sendLocked(sess, lanwire.TypeStop, &lanwire.Stop{Instance: r.Instance, Reason: "machine constraint does not allow this master"})
	default:
		s.log.Info("re-adopting running child", "instance", r.Instance, "machine", sess.machineID)
		gen := s.grantLocked(ns, sess, false)
		s.startCheckLocked(sess, ns, gen, lanwire.Spawned{Instance: r.Instance, PID: r.PID, Ports: r.Ports, StartedAt: r.StartedAt})
	}
}

func (s *Server) onClaimLocked(sess *session, c *lanwire.Claim) {
	ns := s.needs[c.Instance]
	reason := ""
	switch {
	case ns == nil:
		if _, ok := s.svcs[c.Instance]; ok {
			reason = "already satisfied"
		} else {
			reason = "no such need"
		}
	case s.machineLocked(sess.machineID).capacity.Full():
		reason = "no free capacity"
	default:
		reason = s.offerable(ns, sess, time.Now())
	}
	if reason != "" {
		s.sendLocked(sess, lanwire.TypeDeny, &lanwire.Deny{Instance: c.Instance, Reason: reason})
		return
	}
	s.grantLocked(ns, sess, true)
	s.log.Debug("need granted", "instance", c.Instance, "machine", sess.machineID)
	s.sendLocked(sess, lanwire.TypeGrant, &lanwire.Grant{Need: ns.st.Need})
	s.reofferLocked()
}

func (s *Server) onSpawnedLocked(sess *session, sp *lanwire.Spawned) {
	ns := s.needs[sp.Instance]
	if ns == nil || ns.grantee != sess {
		if ns != nil && ns.grantee == nil && ns.expiredFrom == sess.machineID {
			ns.expiredFrom = ""
			s.sendLocked(sess, lanwire.TypeRejected, &lanwire.Rejected{Instance: sp.Instance, Reason: "grant expired before spawned"})
			return
		}
		s.sendError(sess, lanwire.TypeSpawned, fmt.Errorf("spawned %s: not granted to this master", sp.Instance))
		return
	}
	if ns.checking {
		s.sendError(sess, lanwire.TypeSpawned, fmt.Errorf("spawned %s: already being checked", sp.Instance))
		return
	}
	s.startCheckLocked(sess, ns, ns.grantGen, *sp)
}

func (s *Server) startCheckLocked(sess *session, ns *needState, gen uint64, sp lanwire.Spawned) {
	if s.closed || s.ctx == nil {
		return
	}
	ns.checking = true
	if ns.grantTimer != nil {
		ns.grantTimer.Stop()
		ns.grantTimer = nil
	}
	need, addr, ctx := ns.st.Need, sess.address, s.ctx
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := s.checkPorts(ctx, addr, need, sp.Ports)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.finishCheckLocked(sess, gen, sp, err)
	}()
}

func (s *Server) finishCheckLocked(sess *session, gen uint64, sp lanwire.Spawned, checkErr error) {
	ns := s.needs[sp.Instance]
	if s.closed {
		return
	}
	if ns == nil {
		// Removed while checking; RemoveNeed has told the master to stop.
		return
	}
	if ns.grantGen != gen || ns.grantee != sess {
		if ns.grantee == sess {
			// Granted again to the same master, which is restarting the
			// child: its next spawned report starts a new check.
			return
		}
		// Regranted while checking (e.g. removed and added again).
		if sess.live {
			s.sendLocked(sess, lanwire.TypeStop, &lanwire.Stop{Instance: sp.Instance, Reason: "need removed or regranted during the port check"})
		}
		return
	}
	if checkErr != nil {
		s.failLocked(ns, checkErr.Error())
		s.sendLocked(sess, lanwire.TypeRejected, &lanwire.Rejected{Instance: sp.Instance, Reason: checkErr.Error()})
		s.reofferLocked()
		return
	}
	now := time.Now()
	startedAt := sp.StartedAt
	if startedAt.IsZero() {
		startedAt = now
	}
	sv := store.Service{
		Record: lanwire.ServiceRecord{
			Instance: sp.Instance, Module: ns.st.Need.Module, MachineID: sess.machineID,
			Address: sess.address, Ports: sp.Ports, PID: sp.PID, Properties: ns.st.Need.Properties,
			StartedAt: startedAt, PublishedAt: now,
		},
		Need:   ns.st.Need,
		Origin: ns.st.Origin,
	}
	if err := s.store.Publish(sv); err != nil {
		s.log.Error("cannot publish service", "instance", sp.Instance, "error", err)
		s.failLocked(ns, err.Error())
		s.sendLocked(sess, lanwire.TypeRejected, &lanwire.Rejected{Instance: sp.Instance, Reason: "LAN manager could not store the service: " + err.Error()})
		s.reofferLocked()
		return
	}
	ns.stopTimers()
	s.dropNeedLocked(sp.Instance)
	s.svcs[sp.Instance] = &sv
	s.log.Info("service published", "instance", sp.Instance, "machine", sess.machineID, "ports", sp.Ports)
	s.sendLocked(sess, lanwire.TypeApproved, &lanwire.Approved{Service: sv.Record})
	s.emitLocked(adminapi.EventUp, sv.Record)
	s.reofferLocked()
}

// checkPorts dials every declared port; all must answer.
func (s *Server) checkPorts(ctx context.Context, addr string, need lanwire.Need, ports lanwire.Ports) error {
	for _, proto := range need.Protocols {
		p, ok := ports[proto]
		if !ok {
			return fmt.Errorf("no %s port reported", proto)
		}
		if fp := need.FixedPorts[proto]; fp != 0 && fp != p {
			return fmt.Errorf("%s port %d is not the fixed port %d", proto, p, fp)
		}
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("master address %q: %w", addr, err)
	}
	for _, proto := range need.Protocols {
		p := ports[proto]
		var last error
		for attempt := 0; attempt < s.cfg.PortCheckAttempts; attempt++ {
			if attempt > 0 {
				t := time.NewTimer(s.cfg.PortCheckInterval)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
			if last = tcpcheck.Reach(ctx, ip, p, s.cfg.PortCheckTimeout); last == nil {
				break
			}
		}
		if last != nil {
			return fmt.Errorf("%s port %d on %s unreachable: %w", proto, p, addr, last)
		}
	}
	return nil
}

func (s *Server) onSpawnFailedLocked(sess *session, f *lanwire.SpawnFailed) {
	ns := s.needs[f.Instance]
	if ns == nil || ns.grantee != sess {
		s.sendError(sess, lanwire.TypeSpawnFailed, fmt.Errorf("spawn_failed %s: not granted to this master", f.Instance))
		return
	}
	s.failLocked(ns, "spawn failed on "+sess.machineID+": "+f.Error)
	s.reofferLocked()
}

func (s *Server) onDownLocked(sess *session, d *lanwire.Down) {
	if sv := s.svcs[d.Instance]; sv != nil && sv.Record.MachineID == sess.machineID {
		reason := d.Reason
		if reason == "" {
			reason = fmt.Sprintf("exit code %d %s", d.ExitCode, d.Signal)
		}
		s.serviceDownLocked(d.Instance, reason)
		if d.Restarting {
			s.keepForRestartLocked(sess, d.Instance)
		}
		s.reofferLocked()
		return
	}
	if ns := s.needs[d.Instance]; ns != nil && ns.grantee == sess {
		if d.Restarting {
			// Died during its port check: the next run gets a fresh
			// grant, and the stale check's result is dropped.
			s.keepForRestartLocked(sess, d.Instance)
			return
		}
		s.failLocked(ns, "child died before it was published: "+d.Reason)
		s.reofferLocked()
		return
	}
	s.sendError(sess, lanwire.TypeDown, fmt.Errorf("down %s: no service or grant of this master", d.Instance))
}

// keepForRestartLocked grants a need straight back to the master that is
// restarting its child on the same machine and ports, so no other master
// claims it meanwhile. A need in a crash-loop backoff is not kept: the
// master is told to stop the child, and the need waits out its backoff
// like any other.
func (s *Server) keepForRestartLocked(sess *session, inst string) {
	ns := s.needs[inst]
	if ns == nil || !sess.live {
		return
	}
	if time.Now().Before(ns.st.NotBefore) {
		s.sendLocked(sess, lanwire.TypeStop, &lanwire.Stop{Instance: inst, Reason: ns.st.LastError})
		return
	}
	s.grantLocked(ns, sess, true)
	s.log.Debug("need kept for the master restarting its child", "instance", inst, "machine", sess.machineID)
}

// disconnectLocked ends a session's part in the state: its grants are
// offered again now, its services wait for the grace period.
func (s *Server) disconnectLocked(sess *session) {
	if !sess.live {
		return
	}
	sess.live = false
	for _, ns := range s.needs {
		if ns.grantee == sess {
			s.revokeLocked(ns)
		}
	}
	m := s.machines[sess.machineID]
	if m != nil && m.sess == sess {
		m.sess = nil
		m.lastSeen = time.Now()
		if !s.closed {
			s.startGraceLocked(m)
		}
	}
	if !s.closed {
		s.reofferLocked()
	}
}
