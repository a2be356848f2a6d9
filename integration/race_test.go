//go:build race

package integration

// The binaries under test are built with the race detector too when the
// tests run with -race, so races in the daemons fail the suite.
const raceEnabled = true
