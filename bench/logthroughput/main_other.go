//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The bench reads /proc and signals process groups: Linux only.
func main() {
	fmt.Fprintln(os.Stderr, "logthroughput: runs on Linux only")
	os.Exit(1)
}
