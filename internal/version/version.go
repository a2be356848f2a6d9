// Package version says which build of allex a binary is, from the build
// information the Go toolchain records in every binary, so that
// allexmaster, allexlanmanager and allexctl report the same thing without
// build scripts.
package version

import (
	"runtime/debug"
)

// stamped, when set at link time (-ldflags "-X
// github.com/allex-go/allex/internal/version.stamped=v1.2.3"), wins over
// the build information: for packagers that build without the VCS.
var stamped string

// Devel is the version of a binary that knows nothing better, e.g. one
// built by go run.
const Devel = "(devel)"

// String returns this binary's version.
func String() string {
	if stamped != "" {
		return stamped
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Devel
	}
	return FromBuildInfo(bi)
}

// FromBuildInfo is the version in bi: the main module's version (a
// release tag, or the pseudo-version go build derives from the checkout,
// "+dirty" when it had changes); else the VCS revision, "-dirty" when the
// tree had changes; else Devel.
func FromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != Devel {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return Devel
	}
	rev = rev[:min(len(rev), 12)]
	if modified == "true" {
		rev += "-dirty"
	}
	return rev
}
