//go:build linux

package spawner

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ExitWatcher tells supervisors when their children exit, for all of them
// from one goroutine: it waits on every child's pidfd with a single epoll.
// Without it each child costs a goroutine parked on its pidfd (with its
// stack) for its whole life, which for hundreds of children is megabytes.
// Share one among the supervisors of an agent and Close it after they have
// all returned.
//
// The goroutine waits for the epoll fd in Go's netpoller rather than in a
// blocking epoll_wait: a thread blocked in a system call gives up its P
// and must get one back before the exit is handled, which added 0.2 to
// 0.5 ms between a child's death and its restart.
type ExitWatcher struct {
	epfd, wakefd int
	ep           *os.File // epfd, registered with the netpoller
	rc           syscall.RawConn
	done         chan struct{}

	mu      sync.Mutex
	closed  bool
	watches map[int32]func(gone bool) // by pidfd
}

// NewExitWatcher starts a watcher.
func NewExitWatcher() (*ExitWatcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("exit watcher: epoll: %w", err)
	}
	// Non-blocking, so os.NewFile registers it with the netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("exit watcher: epoll: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "exit-watcher-epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("exit watcher: epoll: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("exit watcher: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		_ = ep.Close()
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("exit watcher: epoll add: %w", err)
	}
	w := &ExitWatcher{epfd: epfd, wakefd: wakefd, ep: ep, rc: rc, done: make(chan struct{}), watches: map[int32]func(bool){}}
	go w.run()
	return w, nil
}

// errWatcherClosed is returned by watch after Close.
var errWatcherClosed = errors.New("exit watcher closed")

// watch calls exited once, from the watcher's goroutine: with gone true
// when the process behind pidfd has exited (it is not reaped, so reaping
// it now does not block), with gone false when the watcher closes or
// fails first. exited must not block. On success the watcher owns pidfd
// and closes it; on error the caller still does, and nothing is watched.
func (w *ExitWatcher) watch(pidfd int, exited func(gone bool)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errWatcherClosed
	}
	// Registered before the fd is added, so the loop always finds it.
	w.watches[int32(pidfd)] = exited
	// One-shot: a pidfd stays readable once its process has exited.
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, pidfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(pidfd)}); err != nil {
		delete(w.watches, int32(pidfd))
		return fmt.Errorf("epoll add pidfd: %w", err)
	}
	return nil
}

func (w *ExitWatcher) run() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 64)
	for {
		var n int
		var werr error
		// The callback polls without blocking; while nothing is ready the
		// goroutine is parked until the netpoller sees epfd readable.
		err := w.rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			if errors.Is(werr, unix.EINTR) {
				n, werr = 0, nil
			}
			return n > 0 || werr != nil
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			// Cannot happen with a valid epoll fd; fail the watches so
			// their supervisors do not wait forever.
			w.fail()
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == w.wakefd {
				w.fail()
				return
			}
			w.mu.Lock()
			exited, ok := w.watches[ev.Fd]
			delete(w.watches, ev.Fd)
			w.mu.Unlock()
			if ok {
				// The exit first, the descriptor after: its restart waits
				// on nothing else. Closing the pidfd also takes it out
				// of the epoll set, where EPOLLONESHOT has disarmed it.
				exited(true)
				_ = unix.Close(int(ev.Fd))
			}
		}
	}
}

// fail ends every watch: their callbacks run, and the supervisors' own
// blocking Wait then does the waiting.
func (w *ExitWatcher) fail() {
	w.mu.Lock()
	w.closed = true
	watches := w.watches
	w.watches = map[int32]func(bool){}
	w.mu.Unlock()
	for fd, exited := range watches {
		_ = unix.Close(int(fd))
		exited(false)
	}
}

// Close stops the watcher. Watches still pending are ended (their
// supervisors fall back to a blocking Wait), so close it after the
// supervisors have returned.
func (w *ExitWatcher) Close() error {
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if !closed {
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(w.wakefd, one[:])
	}
	<-w.done
	return errors.Join(w.ep.Close(), unix.Close(w.wakefd))
}
