package lanmanager

import (
	"net"
	"net/http"
	"sync"
)

// newConns tracks the HTTP connections that have not yet delivered a
// request. http.Server.Shutdown waits up to five seconds for such a
// connection before it counts it as idle, and Go's HTTP client leaves one
// behind whenever a dial it started loses the race to a connection freed by
// another request. Closing them when shutdown begins ends Run promptly; any
// request still on its way would have been refused by the closed listener
// a moment later anyway.
type newConns struct {
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
}

// connState is an http.Server ConnState hook.
func (n *newConns) connState(c net.Conn, st http.ConnState) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if st == http.StateNew {
		if n.closing {
			// Accepted just before the listener closed, announced after
			// closeAll ran.
			_ = c.Close()
			return
		}
		if n.conns == nil {
			n.conns = make(map[net.Conn]struct{})
		}
		n.conns[c] = struct{}{}
		return
	}
	delete(n.conns, c)
}

// closeAll closes every connection still waiting for its first request,
// and any accepted later.
func (n *newConns) closeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closing = true
	for c := range n.conns {
		_ = c.Close()
		delete(n.conns, c)
	}
}
