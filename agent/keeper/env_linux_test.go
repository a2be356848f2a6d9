package keeper

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestKeeperEnv(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want []string
	}{
		{[]string{"A=1"}, []string{"A=1", "GODEBUG=memprofilerate=0"}},
		{[]string{"GODEBUG=", "A=1"}, []string{"A=1", "GODEBUG=memprofilerate=0"}},
		// The user's own setting comes later, and wins.
		{[]string{"GODEBUG=gctrace=1,memprofilerate=1", "A=1"}, []string{"A=1", "GODEBUG=memprofilerate=0,gctrace=1,memprofilerate=1"}},
	} {
		if got := keeperEnv(tc.env); !slices.Equal(got, tc.want) {
			t.Errorf("keeperEnv(%q) = %q, want %q", tc.env, got, tc.want)
		}
	}
}

// The keeper process starts with allocation profiling off; its children
// get the master's environment, not the keeper's.
func TestKeeperStartsWithoutAllocationProfile(t *testing.T) {
	t.Setenv("GODEBUG", "")
	dir := t.TempDir()
	c := startClient(t, dir, 0)
	keepers := keepersOf(dir)
	if len(keepers) != 1 {
		t.Fatalf("keepers of %s: %v", dir, keepers)
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(keepers[0]) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(env), "\x00"), "GODEBUG=memprofilerate=0") {
		t.Errorf("keeper environment %q has no GODEBUG=memprofilerate=0", env)
	}
	e := newExits()
	if x := e.wait(t, e.start(t, c, shell(`test -z "$GODEBUG"`), false)); x != (exit{}) {
		t.Errorf("the child got the keeper's GODEBUG: %+v", x)
	}
}
