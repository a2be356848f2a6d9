package main

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// acceptor owns a worker's service listeners: real listening TCP sockets,
// one per granted service, each on its master's address. One goroutine
// accepts on all of them through epoll and closes what it accepts, as a
// server would after the LAN manager's port check; a goroutine blocked in
// Accept per listener would cost the simulation more than the listeners.
type acceptor struct {
	epfd int
	// mu: a listener is not closed (and its number reused) while the
	// loop accepts on it.
	mu       sync.RWMutex
	stopped  atomic.Bool
	done     chan struct{}
	accepted atomic.Int64
}

func newAcceptor() (*acceptor, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	a := &acceptor{epfd: epfd, done: make(chan struct{})}
	go a.loop()
	return a, nil
}

// listen opens a listener on ip with a port the kernel picks.
func (a *acceptor) listen(ip netip.Addr) (int, uint16, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("socket: %w", err)
	}
	fail := func(op string, err error) (int, uint16, error) {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("%s %s: %w", op, ip, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: ip.As4()}); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, 64); err != nil {
		return fail("listen", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(a.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fail("epoll_ctl", err)
	}
	return fd, uint16(sa.(*unix.SockaddrInet4).Port), nil
}

// close closes a listener listen returned.
func (a *acceptor) close(fd int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	_ = unix.EpollCtl(a.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	unix.Close(fd)
}

// stop ends the loop and closes the epoll descriptor.
func (a *acceptor) stop() {
	if a.stopped.Swap(true) {
		return
	}
	<-a.done
	unix.Close(a.epfd)
}

func (a *acceptor) loop() {
	defer close(a.done)
	events := make([]unix.EpollEvent, 256)
	for !a.stopped.Load() {
		// A timeout, so that stop is noticed without a wake-up descriptor.
		n, err := unix.EpollWait(a.epfd, events, 200)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		a.mu.RLock()
		for _, ev := range events[:max(n, 0)] {
			a.drain(int(ev.Fd))
		}
		a.mu.RUnlock()
	}
}

// drain accepts and closes every connection waiting on fd.
func (a *acceptor) drain(fd int) {
	for {
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			unix.Close(c)
			a.accepted.Add(1)
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
		default:
			return
		}
	}
}
