package main

import (
	"os"

	"github.com/allex-go/allex/agent/keeper"
)

// runKeeper runs this binary as the master's keeper process
// (`allexmaster keeper -state-dir DIR`, started by keeper.Start); it
// does not return.
func runKeeper() {
	os.Exit(keeper.Main(os.Args[2:]))
}
