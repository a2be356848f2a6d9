package spawner

import (
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// On Linux one goroutine copies every child's log pipes: it waits on an
// epoll set of them and reads, one chunk per ready pipe and round, into a
// buffer taken only for the round. A goroutine parked per pipe cost its
// stack for each of two streams of every child, most of the master's
// memory with hundreds of quiet children.

// pollPipes turns the log poller off, for tests of the per-pipe pumps.
var pollPipes = true

// logPoller is the epoll set and the pipes in it.
type logPoller struct {
	ep   *os.File // the epoll descriptor, which the runtime poller waits on
	epfd int      // ep's (File.Fd would make it blocking)
	rc   syscall.RawConn

	mu    sync.Mutex
	pipes map[uint64]*polledPipe // by the id in their epoll events
	next  uint64
}

// polledPipe is a pump's pipe while the poller copies it.
type polledPipe struct {
	lp    *logPoller
	id    uint64
	fd    int
	p     *pump
	c     *copier
	grown bool

	mu     sync.Mutex // held while reading and writing the pipe
	closed bool
}

// thePoller is made on first use: a process that starts no child (the
// keeper, allexctl) has none.
var thePoller = sync.OnceValues(newLogPoller)

// warnNoPoller logs once that pipes are copied the slower way.
var warnNoPoller sync.Once

// pollPipe hands p's pipe to the log poller; false means it did not take
// it and the caller copies it.
func pollPipe(p *pump, c *copier) bool {
	if !pollPipes {
		return false
	}
	lp, err := thePoller()
	if err == nil {
		var ok bool
		if ok, err = lp.add(p, c); ok {
			return true
		}
	}
	warnNoPoller.Do(func() {
		c.log.Warn("cannot poll the children's log pipes; a goroutine copies each", "error", err)
	})
	return false
}

func newLogPoller() (*logPoller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Nonblocking, so that os.NewFile hands it to the runtime poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	ep := os.NewFile(uintptr(fd), "epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil, err
	}
	lp := &logPoller{ep: ep, epfd: fd, rc: rc, pipes: map[uint64]*polledPipe{}}
	go lp.run()
	return lp, nil
}

// add puts p's pipe in the epoll set, or, once p is finished, drains it
// at once. false with an error means the set refused it, with the pipe as
// it was.
func (lp *logPoller) add(p *pump, c *copier) (bool, error) {
	pp := &polledPipe{lp: lp, fd: int(p.r.Fd()), p: p, c: c}
	if err := unix.SetNonblock(pp.fd, true); err != nil {
		return false, os.NewSyscallError("fcntl", err)
	}
	p.mu.Lock()
	finished := p.finished
	if !finished {
		if err := lp.register(pp); err != nil {
			p.mu.Unlock()
			_ = unix.SetNonblock(pp.fd, false)
			return false, err
		}
		p.polled = pp
	}
	p.mu.Unlock()
	if finished {
		pp.finish()
	}
	return true, nil
}

func (lp *logPoller) register(pp *polledPipe) error {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	lp.next++
	pp.id = lp.next
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(pp.id)), Pad: int32(uint32(pp.id >> 32))}
	if err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, pp.fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	lp.pipes[pp.id] = pp
	return nil
}

// remove takes pp out of the set; no event for it is handled after.
func (lp *logPoller) remove(pp *polledPipe) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.pipes[pp.id] == pp {
		delete(lp.pipes, pp.id)
		_ = unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, pp.fd, nil)
	}
}

// run copies ready pipes, for the process's life. The set is level
// triggered: a pipe with more than a chunk left is ready again next round.
func (lp *logPoller) run() {
	var evs [64]unix.EpollEvent
	for {
		var n int
		err := lp.rc.Read(func(fd uintptr) bool {
			var err error
			n, err = unix.EpollWait(int(fd), evs[:], 0)
			if err != nil {
				// Only EINTR: asked again, rather than miss what is ready.
				n = 0
				return true
			}
			return n > 0
		})
		if err != nil {
			return // the descriptor is never closed
		}
		buf := chunks.Get().(*[]byte)
		for _, ev := range evs[:n] {
			lp.copy(uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32, *buf)
		}
		chunks.Put(buf)
	}
}

// copy reads once from the pipe with that id into buf and writes what it
// got to the pipe's log.
func (lp *logPoller) copy(id uint64, buf []byte) {
	lp.mu.Lock()
	pp := lp.pipes[id]
	lp.mu.Unlock()
	// A pipe being finished is out of the set already, or about to be.
	if pp == nil || !pp.mu.TryLock() {
		return
	}
	defer pp.mu.Unlock()
	if pp.closed {
		return
	}
	n, err := read(pp.fd, buf)
	if err == unix.EAGAIN {
		return
	}
	// A read that takes a whole default pipe found it full: see copyPipe.
	if n >= defaultPipe && !pp.grown {
		pp.grown = true
		growPipe(pp.fd)
	}
	if n > 0 {
		pp.c.write(buf[:n])
		return
	}
	if err != nil {
		pp.c.log.Error("cannot read the child's output", "error", err)
	}
	lp.remove(pp)
	pp.closeLocked()
}

// finish copies what the pipe holds, without waiting for more, and ends
// the pump.
func (pp *polledPipe) finish() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.closed {
		return
	}
	pp.lp.remove(pp)
	buf := chunks.Get().(*[]byte)
	defer chunks.Put(buf)
	for total := 0; total < drainMax; {
		n, _ := read(pp.fd, *buf)
		if n == 0 {
			break
		}
		pp.c.write((*buf)[:n])
		total += n
	}
	pp.closeLocked()
}

// closeLocked closes the pipe and ends the pump; pp.mu is held.
func (pp *polledPipe) closeLocked() {
	pp.closed = true
	_ = pp.p.r.Close()
	pp.c.resumed()
	close(pp.p.done)
}
