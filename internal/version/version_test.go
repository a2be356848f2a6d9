package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "4500bf9a1b2c3d4e5f60718293a4b5c6d7e8f901"}}
	tests := []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"release", debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: rev}, "v1.2.3"},
		{"pseudo-version of a checkout", debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260101120000-4500bf9a1b2c+dirty"}}, "v0.0.0-20260101120000-4500bf9a1b2c+dirty"},
		{"revision", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: rev}, "4500bf9a1b2c"},
		{"modified revision", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: append(rev, debug.BuildSetting{Key: "vcs.modified", Value: "true"})}, "4500bf9a1b2c-dirty"},
		{"clean revision", debug.BuildInfo{Settings: append(rev, debug.BuildSetting{Key: "vcs.modified", Value: "false"})}, "4500bf9a1b2c"},
		{"short revision", debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}}}, "abc"},
		{"nothing known", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, Devel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FromBuildInfo(&tt.bi); got != tt.want {
				t.Fatalf("FromBuildInfo = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStampedWins(t *testing.T) {
	old := stamped
	defer func() { stamped = old }()
	stamped = "v9.9.9"
	if got := String(); got != "v9.9.9" {
		t.Fatalf("String = %q with a stamped version", got)
	}
}
