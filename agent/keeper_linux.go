//go:build linux

package agent

import (
	"context"
	"fmt"

	"github.com/allex-go/allex/agent/keeper"
)

// startKeeper starts the keeper when the agent has a command for it; the
// keeper first stops one an earlier master left on the state dir.
func (a *Agent) startKeeper(ctx context.Context) error {
	if len(a.opts.KeeperCommand) == 0 {
		return nil
	}
	k, err := keeper.Start(ctx, keeper.Options{
		StateDir: a.opts.StateDir,
		Command:  a.opts.KeeperCommand,
		Logger:   a.log.Named("keeper"),
	})
	if err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	a.keeper = k
	return nil
}
