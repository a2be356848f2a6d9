//go:build windows

package server

import (
	"errors"
	"fmt"
	"net"

	"github.com/Microsoft/go-winio"
)

// ErrInUse is returned by Listen when another process owns the pipe.
var ErrInUse = errors.New("pipe in use by a live process")

// Listen opens the machine pipe. Named pipes vanish with their owner, so
// there is no stale file to clear; a live owner makes creation fail.
// group (socketgroup) is not supported on Windows.
func Listen(path, group string) (net.Listener, error) {
	if group != "" {
		return nil, fmt.Errorf("socketgroup %q: not supported on Windows (the pipe admits its owner and administrators)", group)
	}
	ln, err := winio.ListenPipe(path, &winio.PipeConfig{
		// Owner and local administrators and system only, the pipe
		// counterpart of mode 0660.
		SecurityDescriptor: "D:P(A;;GA;;;OW)(A;;GA;;;BA)(A;;GA;;;SY)",
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w: %w", path, ErrInUse, err)
	}
	return ln, nil
}
