//go:build !linux

package agent

import "context"

// startKeeper: the keeper is Linux-only; elsewhere the agent forks the
// children itself and enforces the lease alone.
func (a *Agent) startKeeper(context.Context) error { return nil }
