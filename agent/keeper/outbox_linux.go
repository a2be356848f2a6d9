package keeper

import (
	"errors"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// outbox sends the keeper's messages in order without ever blocking the
// sender: the reaper and the forker send while holding the keeper's lock,
// and a frozen master must not stop the lease from being enforced. A
// message goes out at once when nothing is queued and the socket has
// room, else it waits for the writer goroutine.
type outbox struct {
	fd   int
	wake chan struct{} // cap 1

	mu   sync.Mutex
	q    [][]byte
	dead bool // the master's end is gone: drop everything
}

func newOutbox(fd int) *outbox { return &outbox{fd: fd, wake: make(chan struct{}, 1)} }

func (o *outbox) send(msg []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead {
		return
	}
	if len(o.q) == 0 {
		err := sendPacket(o.fd, msg, nil, unix.MSG_DONTWAIT)
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EAGAIN) {
			o.dead = true
			return
		}
	}
	o.q = append(o.q, msg)
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// run is the writer: it sends what is queued, blocking as long as the
// master does not read. A message leaves the queue only once sent, so
// send keeps the order.
func (o *outbox) run() {
	for range o.wake {
		for {
			o.mu.Lock()
			if o.dead || len(o.q) == 0 {
				o.mu.Unlock()
				break
			}
			msg := o.q[0]
			o.mu.Unlock()
			err := sendPacket(o.fd, msg, nil, 0)
			o.mu.Lock()
			o.q[0] = nil
			o.q = o.q[1:]
			if err != nil {
				o.dead, o.q = true, nil
			}
			o.mu.Unlock()
		}
	}
}

// flush waits, at most limit, until everything queued is sent or the
// master is gone. Only the exit uses it.
func (o *outbox) flush(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for {
		o.mu.Lock()
		idle := o.dead || len(o.q) == 0
		o.mu.Unlock()
		if idle || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// sendPacket sends one packet; a closed peer is an error, not a SIGPIPE.
func sendPacket(fd int, msg, oob []byte, flags int) error {
	for {
		err := unix.Sendmsg(fd, msg, oob, nil, flags|unix.MSG_NOSIGNAL)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
