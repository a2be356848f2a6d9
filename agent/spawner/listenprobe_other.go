//go:build !linux

package spawner

import (
	"errors"
	"fmt"
)

// ListenProbe needs Linux's sock_diag; elsewhere readiness connects.
type ListenProbe struct{}

// NewListenProbe returns an error wrapping errors.ErrUnsupported.
func NewListenProbe() (*ListenProbe, error) {
	return nil, fmt.Errorf("listen probe: %w", errors.ErrUnsupported)
}

// Close does nothing.
func (p *ListenProbe) Close() error { return nil }

// Listening always fails: see NewListenProbe.
func (p *ListenProbe) Listening(uint16) (bool, error) { return false, errors.ErrUnsupported }
