//go:build linux && !race

package nemesis

// raceEnabled is true when the tests are built with -race.
const raceEnabled = false
