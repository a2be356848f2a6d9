//go:build !linux

package tcpcheck

import (
	"context"
	"net/netip"
	"time"
)

// Reach connects to addr:port within timeout and closes the connection at
// once, with a FIN.
func Reach(ctx context.Context, addr netip.Addr, port uint16, timeout time.Duration) error {
	return viaNet(ctx, addr, port, timeout)
}
