//go:build !unix

package lanmanager

// openFileLimit: no descriptor limit to read here.
func openFileLimit() (uint64, bool) { return 0, false }
