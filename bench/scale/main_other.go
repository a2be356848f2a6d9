//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The bench pins processes to CPUs, accepts with epoll and reads /proc:
// Linux only.
func main() {
	fmt.Fprintln(os.Stderr, "scale: runs on Linux only")
	os.Exit(1)
}
