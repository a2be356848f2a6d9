//go:build !linux

package lanmanager

import (
	"context"
	"net/netip"
	"time"
)

// reach connects to addr:port within timeout and closes the connection at
// once with a reset.
func reach(ctx context.Context, addr netip.Addr, port uint16, timeout time.Duration) error {
	return reachNet(ctx, addr, port, timeout)
}
