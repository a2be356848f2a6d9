package lanmanager

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/internal/tcpcheck"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/lanstate"
	"github.com/allex-go/allex/lanwire"
)

// sendQueue bounds the frames waiting for one master; a master that falls
// this far behind is disconnected instead of growing memory.
const sendQueue = 4096

const writeTimeout = 10 * time.Second

// session is one master link. Its reader posts the hello, the frames and
// the end to the loop; its writer sends what the loop queues, and pings.
type session struct {
	id    lanstate.SessionID
	conn  *websocket.Conn
	batch *batchConn
	// queue holds the encoded frames for the writer, which wake tells
	// of; it grows only as far as a burst needs.
	qmu       sync.Mutex
	queue     [][]byte
	wake      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	// helloBy is when the hello must have come; zero once it has. Only
	// the reader uses it.
	helloBy time.Time
	// machine is the id the master's certificate names; its hello must
	// say the same ("" over plain HTTP: any).
	machine string

	// mu guards the end of the session against its pongs: a pong renews
	// the master's lease, so none may leave once the end, and with it the
	// last heard time the fence counts from, is fixed.
	mu        sync.Mutex
	live      bool
	lastHeard time.Time
	how       lanstate.End
	endedAt   time.Time
	closeCode int
	closeText string
}

// heard records that the master spoke; false once the session has ended.
func (sess *session) heard() bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.live {
		sess.lastHeard = time.Now()
	}
	return sess.live
}

// heardWithin says whether the master spoke within d.
func (sess *session) heardWithin(d time.Duration) bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.live && time.Since(sess.lastHeard) < d
}

// end fixes how the session ended; the first call wins.
func (sess *session) end(how lanstate.End) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.live {
		sess.live, sess.how, sess.endedAt = false, how, time.Now()
	}
}

// kill ends the session from this side: the writer flushes what is
// queued, sends a close frame with code and closes the connection.
func (sess *session) kill(code int, reason string) {
	sess.end(lanstate.EndLease)
	sess.mu.Lock()
	if sess.closeCode == 0 {
		sess.closeCode, sess.closeText = code, reason
	}
	sess.mu.Unlock()
	sess.closeOnce.Do(func() { close(sess.done) })
}

// sendFrame queues a frame; a master that is not reading is disconnected.
func (sess *session) sendFrame(typ string, payload any, log hclog.Logger) {
	b, err := lanwire.Encode(typ, payload)
	if err != nil {
		log.Error("cannot encode frame", "type", typ, "error", err)
		return
	}
	sess.qmu.Lock()
	full := len(sess.queue) >= sendQueue
	if !full {
		sess.queue = append(sess.queue, b)
	}
	sess.qmu.Unlock()
	if full {
		log.Warn("master is not reading its link; disconnecting", "session", sess.id)
		sess.kill(websocket.CloseTryAgainLater, "not reading its link")
		return
	}
	select {
	case sess.wake <- struct{}{}:
	default:
	}
}

// take returns the queued frames and empties the queue.
func (sess *session) take() [][]byte {
	sess.qmu.Lock()
	defer sess.qmu.Unlock()
	q := sess.queue
	sess.queue = nil
	return q
}

// maxWriteBatch bounds the frames written in one system call.
const maxWriteBatch = 256

// writeFrames writes frames, maxWriteBatch to a system call.
func (sess *session) writeFrames(frames [][]byte) error {
	for len(frames) > 0 {
		n := min(len(frames), maxWriteBatch)
		sess.batch.cork()
		var err error
		for _, b := range frames[:n] {
			_ = sess.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err = sess.conn.WriteMessage(websocket.TextMessage, b); err != nil {
				break
			}
		}
		if ferr := sess.batch.flush(); err == nil {
			err = ferr
		}
		if err != nil {
			return err
		}
		frames = frames[n:]
	}
	return nil
}

// writeLoop owns all data writes to the connection and the server pings.
// The frames queued together leave together (batchConn).
func (s *Server) writeLoop(sess *session) {
	defer s.wg.Done()
	defer sess.conn.Close()
	tick := time.NewTicker(s.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-sess.wake:
			if sess.writeFrames(sess.take()) != nil {
				// A failed write says nothing sure about the master's
				// process: count its lease.
				sess.kill(websocket.CloseAbnormalClosure, "")
				return
			}
		case <-tick.C:
			if sess.heardWithin(s.cfg.Heartbeat) {
				// The master's own pings keep the link checked; a
				// thousand masters need not be pinged back as well.
				continue
			}
			if sess.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)) != nil {
				sess.kill(websocket.CloseAbnormalClosure, "")
				return
			}
		case <-sess.done:
			if sess.writeFrames(sess.take()) != nil {
				return
			}
			sess.mu.Lock()
			code, text := sess.closeCode, sess.closeText
			sess.mu.Unlock()
			if code != websocket.CloseAbnormalClosure {
				_ = sess.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
			}
			return
		}
	}
}

// linker says who may link: over TLS a master by its certificate (or
// relayed by a standby that verified it), which fixes its machine id;
// over plain HTTP the LAN's token, as any machine.
func (s *Server) linker(r *http.Request) (principal, error) {
	p, err := s.who(r, time.Now())
	switch {
	case err != nil:
		return p, err
	case p.role == roleMachine:
	case s.cfg.TLS == nil && p.token == "root":
	default:
		return p, fmt.Errorf("%w: %w", adminapi.ErrUnauthorized, errLinkNeedsCert)
	}
	s.authenticated(r)
	return p, nil
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) handleLink(w http.ResponseWriter, r *http.Request) {
	who, err := s.linker(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	up := websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// Masters are not browsers; Origin carries no meaning here and
		// the bearer token is the authentication.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	// Hijacked connections are not Shutdown's: they are counted here.
	if !s.track(2) {
		writeError(w, http.StatusServiceUnavailable, "LAN manager stopping")
		return
	}
	bw := &batchingWriter{ResponseWriter: w}
	conn, err := up.Upgrade(bw, r, nil)
	if err != nil {
		s.wg.Add(-2)
		return // Upgrade has answered the client.
	}
	conn.SetReadLimit(lanwire.MaxFrameSize)
	sess := &session{
		id: lanstate.SessionID(newID()), conn: conn, batch: bw.conn, wake: make(chan struct{}, 1), done: make(chan struct{}),
		live: true, lastHeard: time.Now(), helloBy: time.Now().Add(s.cfg.HelloTimeout), machine: who.machine,
	}
	go s.writeLoop(sess)
	defer s.wg.Done()
	s.readLoop(sess, r.RemoteAddr)
}

// extendDeadline gives the next read three heartbeats, but never past
// the hello's deadline: pongs alone do not keep a link without a hello.
func (s *Server) extendDeadline(sess *session) {
	d := time.Now().Add(3 * s.cfg.Heartbeat)
	if !sess.helloBy.IsZero() && sess.helloBy.Before(d) {
		d = sess.helloBy
	}
	_ = sess.conn.SetReadDeadline(d)
}

// readLoop reads the hello, then frames, until the link ends; it decodes
// them here, so the loop only applies them.
func (s *Server) readLoop(sess *session, remote string) {
	conn := sess.conn
	s.extendDeadline(sess)
	conn.SetPongHandler(func(string) error {
		sess.heard()
		s.extendDeadline(sess)
		return nil
	})
	conn.SetPingHandler(func(data string) error {
		if sess.heard() && (s.cfg.Leading == nil || s.cfg.Leading()) {
			s.extendDeadline(sess)
			// The pong renews the master's lease; it only leaves while the
			// session is live, after its heard time moved.
			_ = conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeTimeout))
		}
		return nil
	})
	go func() {
		// Unblock the read when the session is closed from elsewhere.
		<-sess.done
		_ = conn.SetReadDeadline(time.Now())
	}()
	if !s.readHello(sess, remote) {
		return
	}
	for {
		// Extend before reading, not after handling: a frame handled
		// slowly must not use up the next read's budget, whose frames and
		// pings may be waiting already.
		s.extendDeadline(sess)
		mt, data, err := conn.ReadMessage()
		if err != nil {
			sess.end(endOf(err))
			sess.mu.Lock()
			ev := evEnded{sess: sess, how: sess.how, lastHeard: sess.lastHeard, end: sess.endedAt}
			sess.mu.Unlock()
			s.log.Info("master link closed", "session", sess.id, "how", ev.how, "error", err)
			s.post(ev)
			sess.kill(websocket.CloseNormalClosure, "")
			return
		}
		if !sess.heard() {
			continue
		}
		if mt != websocket.TextMessage {
			sess.sendFrame(lanwire.TypeError, &lanwire.Error{Message: "frames are JSON text messages"}, s.log)
			continue
		}
		typ, p, err := lanwire.Decode(data)
		if err != nil {
			s.log.Warn("refused frame from master", "session", sess.id, "ref", typ, "error", err)
			sess.sendFrame(lanwire.TypeError, &lanwire.Error{Ref: typ, Message: err.Error()}, s.log)
			continue
		}
		if !s.post(evFrame{sess: sess, typ: typ, payload: p}) {
			sess.kill(websocket.CloseGoingAway, "LAN manager stopping")
		}
	}
}

// readHello reads the first frame, which must be a valid hello within
// Config.HelloTimeout, and hands the session to the loop.
func (s *Server) readHello(sess *session, remote string) bool {
	_, data, err := sess.conn.ReadMessage()
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(sess.helloBy) {
		s.log.Warn("link sent no hello in time; closing it", "remote", remote, "hellotimeout", s.cfg.HelloTimeout)
		sess.kill(websocket.ClosePolicyViolation, fmt.Sprintf("no hello within %v", s.cfg.HelloTimeout))
		return false
	}
	if err != nil {
		s.log.Debug("link closed before hello", "remote", remote, "error", err)
		sess.kill(websocket.CloseNormalClosure, "")
		return false
	}
	sess.helloBy = time.Time{}
	typ, p, err := lanwire.Decode(data)
	if err == nil && typ != lanwire.TypeHello {
		err = fmt.Errorf("first frame must be hello, got %q", typ)
	}
	if h, ok := p.(*lanwire.Hello); err == nil && ok && sess.machine != "" && h.MachineID != sess.machine {
		err = fmt.Errorf("this master's certificate is machine %q's; it cannot say hello as %q", sess.machine, h.MachineID)
	}
	if err != nil {
		s.log.Warn("refused first frame from master", "remote", remote, "error", err)
		sess.sendFrame(lanwire.TypeError, &lanwire.Error{Ref: typ, Message: err.Error()}, s.log)
		sess.kill(websocket.ClosePolicyViolation, "bad hello")
		return false
	}
	sess.heard()
	if !s.post(evOpen{sess: sess}) || !s.post(evHello{sess: sess, hello: p.(*lanwire.Hello)}) {
		sess.kill(websocket.CloseGoingAway, "LAN manager stopping")
		return false
	}
	return true
}

// endOf reads how a link ended from the reader's error: a close frame
// says it; a connection that ended without one (the WebSocket library's
// 1006, a reset) means the master's process is gone; anything else (a
// read timeout, a network error) says nothing about it.
func endOf(err error) lanstate.End {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case lanwire.CloseNoCopies:
			return lanstate.EndNoCopies
		case lanwire.CloseAbnormal:
			return lanstate.EndVanished
		}
		return lanstate.EndLease
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return lanstate.EndVanished
	}
	return lanstate.EndLease
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
		if err := s.reach(ctx, ip, proto, ports[proto], addr); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) reach(ctx context.Context, ip netip.Addr, proto string, p uint16, addr string) error {
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
			return nil
		}
	}
	return fmt.Errorf("%s port %d on %s unreachable: %w", proto, p, addr, last)
}
