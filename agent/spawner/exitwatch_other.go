//go:build !linux

package spawner

import (
	"errors"
	"fmt"
)

// ExitWatcher needs pidfds (Linux); elsewhere each supervisor waits on
// its own child.
type ExitWatcher struct{}

// NewExitWatcher returns an error wrapping errors.ErrUnsupported.
func NewExitWatcher() (*ExitWatcher, error) {
	return nil, fmt.Errorf("exit watcher: %w", errors.ErrUnsupported)
}

// Close does nothing.
func (w *ExitWatcher) Close() error { return nil }
