//go:build race

package e2e

// RaceEnabled is true when built with -race; the binaries under test are
// then built with the race detector too, so races in the daemons fail the
// suite.
const RaceEnabled = true
