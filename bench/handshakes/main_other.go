//go:build !linux

// Command handshakes measures the LAN manager's TLS handshakes per second;
// it reads /proc, so it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "handshakes: Linux only (it reads /proc)")
	os.Exit(1)
}
