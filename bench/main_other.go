//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The comparison reads /proc and signals process groups: Linux only.
func main() {
	fmt.Fprintln(os.Stderr, "bench: runs on Linux only")
	os.Exit(1)
}
