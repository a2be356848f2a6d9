//go:build !linux

package spawner

// awaitExit has no pidfd to wait on here; Wait blocks instead.
func awaitExit(int) {}
