//go:build linux

package keeper

import (
	"os"
	"strings"
	"testing"
	"time"
)

// waitLimit bounds every wait for something a test expects to happen.
const waitLimit = 60 * time.Second

// TestMain lets the test binary be the keeper (`keeper ...`, the default
// Command run from a test binary), a master (`master ...`) or a child
// (`child ...`) for the tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "keeper":
			os.Exit(Main(os.Args[2:]))
		case "master":
			os.Exit(helperMaster(os.Args[2:]))
		case "child":
			os.Exit(helperChild(os.Args[2:]))
		}
	}
	// The race detector's runtime sleeps a second before every exit of
	// a helper (a keeper, mostly) unless told not to.
	if race := os.Getenv("GORACE"); !strings.Contains(race, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(race+" atexit_sleep_ms=0"))
	}
	os.Exit(m.Run())
}
