package main

import (
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// handoff is a TCP listener that a standby's HTTP server can "close"
// without closing the socket: Close only wakes the pending Accept, and
// Take gives the still-bound socket to the leader's server. Connections
// that arrive in between wait in the kernel's accept queue instead of
// being refused.
type handoff struct {
	*net.TCPListener
	closed atomic.Bool
}

var errHandedOff = errors.New("listener handed off")

func (h *handoff) Accept() (net.Conn, error) {
	if h.closed.Load() {
		return nil, errHandedOff
	}
	c, err := h.TCPListener.Accept()
	if err != nil && h.closed.Load() {
		return nil, errHandedOff
	}
	return c, err
}

// Close wakes Accept by a deadline in the past; the socket stays bound.
func (h *handoff) Close() error {
	h.closed.Store(true)
	return h.SetDeadline(time.Unix(1, 0))
}

// Take returns the socket, ready to accept again. Call it after the
// standby's server has stopped.
func (h *handoff) Take() net.Listener {
	_ = h.SetDeadline(time.Time{})
	return h.TCPListener
}
