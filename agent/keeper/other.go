//go:build !linux

package keeper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultExitFence is how long children get between SIGTERM and SIGKILL
// once the master is gone.
const DefaultExitFence = 2 * time.Second

// ErrKeeperDied is the error a child's exited callback gets when its
// keeper died under it.
var ErrKeeperDied = errors.New("keeper: the keeper process died")

// ErrNotRunning wraps what Start returns while there is no keeper.
var ErrNotRunning = errors.New("keeper: not running")

// Options configure Start.
type Options struct {
	StateDir  string
	Command   []string
	ExitFence time.Duration
	Logger    hclog.Logger
}

// Client is the master's side of its keeper; there is none off Linux.
type Client struct{}

// Start fails: the keeper needs Linux (subreaper, Pdeathsig, CLOCK_BOOTTIME).
func Start(context.Context, Options) (*Client, error) {
	return nil, fmt.Errorf("keeper: %w", errors.ErrUnsupported)
}

// Start fails.
func (c *Client) Start(*exec.Cmd, bool, func(int, string, bool, error)) (int, error) {
	return 0, fmt.Errorf("keeper: %w", errors.ErrUnsupported)
}

// SetLease does nothing.
func (c *Client) SetLease(time.Duration) {}

// SetExitFence does nothing.
func (c *Client) SetExitFence(time.Duration) {}

// Close does nothing.
func (c *Client) Close() error { return nil }

// Main fails: the keeper needs Linux.
func Main([]string) int {
	fmt.Fprintln(os.Stderr, "keeper: only on Linux")
	return 2
}
