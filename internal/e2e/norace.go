//go:build !race

package e2e

// RaceEnabled is true when built with -race.
const RaceEnabled = false
