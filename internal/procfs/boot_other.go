//go:build !linux

package procfs

// BootTicks is 0: start times come from /proc on Linux only.
func BootTicks() uint64 { return 0 }
