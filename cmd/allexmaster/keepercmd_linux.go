package main

import (
	"fmt"
	"os"
)

// keeperCommand runs this binary as the keeper (package keeper), the
// parent of every child, which enforces the LAN lease even when the
// master is frozen or killed.
func keeperCommand() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable for the keeper: %w", err)
	}
	return []string{exe, "keeper"}, nil
}
