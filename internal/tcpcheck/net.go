package tcpcheck

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// viaNet is Reach through net.Dialer.
func viaNet(ctx context.Context, addr netip.Addr, port uint16, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, port).String())
	if err != nil {
		return err
	}
	return c.Close()
}
