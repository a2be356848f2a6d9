//go:build !linux

package spawner

import (
	"net"
	"strconv"
	"time"
)

// probePort connects to 127.0.0.1:port and closes the connection at once,
// with a reset (SO_LINGER 0) rather than a FIN, as Kubernetes' TCP probes
// do, so no TIME_WAIT entry is left on the child's port.
func probePort(port uint16, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), timeout)
	if err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c.Close()
}
