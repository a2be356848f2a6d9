package keeper

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// conn is one keeper process and the client's end of its socket.
type conn struct {
	c         *Client
	log       hclog.Logger
	cmd       *exec.Cmd
	pid       int
	f         *os.File // non-blocking, in the netpoller
	rc        syscall.RawConn
	ready     chan struct{}
	readyOnce sync.Once
	reaped    chan struct{} // closed once cmd.Wait returned and state is set
	state     *os.ProcessState
	dead      chan struct{} // closed once every child and request is answered
	nextID    atomic.Uint32

	// wmu orders the sends, and keeps the settings ahead of a Start.
	wmu sync.Mutex
	smu sync.Mutex
	set settings

	mu       sync.Mutex
	pending  map[uint32]*request
	children map[int]func(code int, signal string, strays bool, err error) // by pid
	bye      bool                                                          // an end the client asked for
}

// settings are the lease and exit fence not yet sent to the keeper.
type settings struct {
	lease, fence           int64
	leaseDirty, fenceDirty bool
	flushing               bool // a goroutine is sending them
}

// request is a Start waiting for its reply.
type request struct {
	ch     chan result // cap 1
	exited func(code int, signal string, strays bool, err error)
}

type result struct {
	pid int
	err error
}

func socketPair() (mine, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("keeper: socketpair: %w", err)
	}
	// Non-blocking, so os.NewFile puts the master's end in the netpoller.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		_ = unix.Close(fds[0])
		_ = unix.Close(fds[1])
		return nil, nil, fmt.Errorf("keeper: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "keeper-control"), os.NewFile(uintptr(fds[1]), "keeper-control-peer"), nil
}

// newConn takes over a started keeper and its socket.
func newConn(c *Client, cmd *exec.Cmd, f *os.File) (*conn, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("keeper: socket: %w", err)
	}
	k := &conn{
		c: c, log: c.log.With("keeper_pid", cmd.Process.Pid), cmd: cmd, pid: cmd.Process.Pid, f: f, rc: rc,
		ready: make(chan struct{}), reaped: make(chan struct{}), dead: make(chan struct{}),
		pending: map[uint32]*request{}, children: map[int]func(int, string, bool, error){},
	}
	go func() {
		_ = cmd.Wait()
		k.state = cmd.ProcessState
		close(k.reaped)
	}()
	go k.read()
	return k, nil
}

// exitState describes how the keeper ended, once known.
func (k *conn) exitState() string {
	select {
	case <-k.reaped:
		return k.state.String()
	default:
		return "not reaped"
	}
}

func (k *conn) start(cmd *exec.Cmd, fenced bool, exited func(int, string, bool, error)) (int, error) {
	m := message{kind: kindStart, id: k.nextID.Add(1), fenced: fenced, path: cmd.Path, dir: cmd.Dir, argv: cmd.Args, env: cmd.Env}
	if m.env == nil {
		m.env = os.Environ()
	}
	var fds []int
	for i, s := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		switch f := s.(type) {
		case nil:
		case *os.File:
			fds = append(fds, int(f.Fd()))
			m.stdio[i] = true
		default:
			return 0, fmt.Errorf("keeper: start %s: stdio %d is a %T, not a file", cmd.Path, i, s)
		}
	}
	msg := m.appendTo(nil)
	if len(msg) > MaxMessage {
		return 0, fmt.Errorf("keeper: start %s: argv and env take %d bytes, over %d", cmd.Path, len(msg), MaxMessage)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	r := &request{ch: make(chan result, 1), exited: exited}
	k.mu.Lock()
	if k.pending == nil {
		err := k.endErr()
		k.mu.Unlock()
		return 0, err
	}
	k.pending[m.id] = r
	k.mu.Unlock()

	k.wmu.Lock()
	err := k.flushLocked(true)
	if err == nil {
		err = k.send(msg, oob, true)
	}
	k.wmu.Unlock()
	// The descriptors were only borrowed by number until sent.
	runtime.KeepAlive(cmd)
	if err != nil {
		k.forget(m.id)
		return 0, fmt.Errorf("keeper: start %s: %w", cmd.Path, err)
	}
	timer := time.NewTimer(replyLimit)
	defer timer.Stop()
	select {
	case res := <-r.ch:
		return res.pid, res.err
	case <-timer.C:
	}
	k.forget(m.id)
	// The reply may have come in meanwhile.
	select {
	case res := <-r.ch:
		return res.pid, res.err
	default:
	}
	return 0, fmt.Errorf("keeper: start %s: no reply within %v", cmd.Path, replyLimit)
}

func (k *conn) forget(id uint32) {
	k.mu.Lock()
	delete(k.pending, id)
	k.mu.Unlock()
}

// endErr is what the children and requests of an ended conn get; k.mu is held.
func (k *conn) endErr() error {
	if k.bye {
		return errClosed
	}
	return ErrKeeperDied
}

// send sends one packet; k.wmu is held. Without block it gives up at
// once when the keeper's queue is full.
func (k *conn) send(msg, oob []byte, block bool) error {
	var serr error
	write := func(fd uintptr) bool {
		serr = sendPacket(int(fd), msg, oob, unix.MSG_DONTWAIT)
		return !block || !errors.Is(serr, unix.EAGAIN)
	}
	// Also for a single try: a past deadline would refuse it.
	if err := k.f.SetWriteDeadline(time.Now().Add(replyLimit)); err != nil {
		return err
	}
	if err := k.rc.Write(write); err != nil {
		return err
	}
	return serr
}

func (k *conn) queueLease(until time.Duration) {
	k.smu.Lock()
	k.set.lease, k.set.leaseDirty = int64(until), true
	k.smu.Unlock()
}

func (k *conn) queueFence(d time.Duration) {
	k.smu.Lock()
	k.set.fence, k.set.fenceDirty = int64(d), true
	k.smu.Unlock()
}

// flushSoon sends the queued settings now if the socket is free and has
// room, else has a goroutine send them; a Start sends them first anyway.
func (k *conn) flushSoon() {
	if k.wmu.TryLock() {
		_ = k.flushLocked(false)
		k.wmu.Unlock()
	}
	k.smu.Lock()
	run := (k.set.leaseDirty || k.set.fenceDirty) && !k.set.flushing
	if run {
		k.set.flushing = true
	}
	k.smu.Unlock()
	if run {
		go k.flusher()
	}
}

func (k *conn) flusher() {
	for {
		k.wmu.Lock()
		err := k.flushLocked(true)
		k.wmu.Unlock()
		k.smu.Lock()
		if err != nil || !(k.set.leaseDirty || k.set.fenceDirty) {
			k.set.flushing = false
			k.smu.Unlock()
			return
		}
		k.smu.Unlock()
	}
}

// flushLocked sends the queued settings; k.wmu is held.
func (k *conn) flushLocked(block bool) error {
	for {
		k.smu.Lock()
		var m *message
		switch {
		case k.set.fenceDirty:
			m, k.set.fenceDirty = &message{kind: kindFence, n: k.set.fence}, false
		case k.set.leaseDirty:
			m, k.set.leaseDirty = &message{kind: kindLease, n: k.set.lease}, false
		}
		k.smu.Unlock()
		if m == nil {
			return nil
		}
		m.id = k.nextID.Add(1)
		if err := k.send(m.appendTo(nil), nil, block); err != nil {
			// Sent again later, with whatever value is newest then.
			k.smu.Lock()
			if m.kind == kindFence {
				k.set.fenceDirty = true
			} else {
				k.set.leaseDirty = true
			}
			k.smu.Unlock()
			return err
		}
	}
}

// read handles the keeper's messages until its socket closes, then ends
// the conn.
func (k *conn) read() {
	buf := make([]byte, MaxMessage)
	for {
		var n, flags int
		var rerr error
		err := k.rc.Read(func(fd uintptr) bool {
			for {
				n, _, flags, _, rerr = unix.Recvmsg(int(fd), buf, nil, 0)
				if !errors.Is(rerr, unix.EINTR) {
					return !errors.Is(rerr, unix.EAGAIN)
				}
			}
		})
		if err == nil {
			err = rerr
		}
		if err != nil || n == 0 {
			break
		}
		m, err := parse(buf[:n])
		if err == nil && flags&unix.MSG_TRUNC != 0 {
			err = errors.New("truncated packet")
		}
		if err != nil {
			k.log.Error("bad message from the keeper", "error", err)
			continue
		}
		k.handle(&m)
	}
	k.finish()
}

func (k *conn) handle(m *message) {
	switch m.kind {
	case kindReady:
		if m.n != Version {
			k.log.Error("keeper speaks another protocol version; stopping it", "version", m.n, "want", Version)
			_ = k.cmd.Process.Kill()
			return
		}
		k.readyOnce.Do(func() { close(k.ready) })
	case kindStarted:
		k.mu.Lock()
		r := k.pending[m.id]
		delete(k.pending, m.id)
		if r != nil {
			k.children[m.pid] = r.exited
		}
		k.mu.Unlock()
		if r == nil {
			k.log.Warn("keeper started a child no one waits for; killing its group", "pid", m.pid)
			signalGroup(m.pid, unix.SIGKILL)
			return
		}
		r.ch <- result{pid: m.pid}
	case kindFailed:
		k.mu.Lock()
		r := k.pending[m.id]
		delete(k.pending, m.id)
		k.mu.Unlock()
		if r == nil {
			k.log.Error("keeper refused a request", "id", m.id, "error", m.text)
			return
		}
		r.ch <- result{err: errors.New(m.text)}
	case kindExited:
		k.mu.Lock()
		exited := k.children[m.pid]
		delete(k.children, m.pid)
		k.mu.Unlock()
		if exited != nil {
			exited(m.code, m.text, m.strays, nil)
		}
	default:
		k.log.Error("unexpected message from the keeper", "kind", string(rune(m.kind)))
	}
}

// finish ends the conn once the keeper closed its socket, which it does
// only by exiting: its children still known alive have their groups
// killed and are reported, and waiting starts fail.
func (k *conn) finish() {
	_ = k.f.Close()
	// Reaped, so its lock is free for the next keeper.
	select {
	case <-k.reaped:
	case <-time.After(exitLimit):
		_ = k.cmd.Process.Kill()
		select {
		case <-k.reaped:
		case <-time.After(exitLimit):
			k.log.Error("keeper not reaped after SIGKILL", "waited", exitLimit)
		}
	}
	k.mu.Lock()
	children, pending := k.children, k.pending
	k.children, k.pending = nil, nil
	err, bye := k.endErr(), k.bye
	k.mu.Unlock()
	for pid, exited := range children {
		// Its direct child died of Pdeathsig; grandchildren would not.
		signalGroup(pid, unix.SIGKILL)
		exited(-1, "SIGKILL", false, err)
	}
	for _, r := range pending {
		r.ch <- result{err: err}
	}
	close(k.dead)
	if !bye {
		k.c.lost(k, len(children))
	}
}

// close says Bye and waits, at most limit, for the keeper to exit.
func (k *conn) close(limit time.Duration) error {
	k.mu.Lock()
	k.bye = true
	k.mu.Unlock()
	k.wmu.Lock()
	err := k.send((&message{kind: kindBye, id: k.nextID.Add(1)}).appendTo(nil), nil, true)
	k.wmu.Unlock()
	if err != nil {
		k.log.Debug("cannot say bye", "error", err)
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-k.dead:
	case <-timer.C:
		k.log.Warn("keeper did not exit after bye; killing it", "waited", limit)
		_ = k.cmd.Process.Kill()
		<-k.dead
	}
	select {
	case <-k.reaped:
		if !k.state.Success() {
			return fmt.Errorf("keeper: pid %d: %v", k.pid, k.state)
		}
	default:
		return fmt.Errorf("keeper: pid %d not reaped", k.pid)
	}
	return nil
}
