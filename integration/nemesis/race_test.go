//go:build linux && race

package nemesis

// raceEnabled: the binaries built for the run get -race too (copied from
// internal/e2e, which this package does not import).
const raceEnabled = true
