//go:build !linux

package main

// keeperCommand: the keeper is Linux-only; elsewhere the master forks its
// children itself.
func keeperCommand() ([]string, error) { return nil, nil }
