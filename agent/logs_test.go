package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/allex-go/allex/agent/config"
	"github.com/allex-go/allex/agent/spawner"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// A spec's own log limits win, then the master's, then the spawner's.
func TestLogLimitsPrecedence(t *testing.T) {
	cfg := config.Default()
	cfg.LogMaxSize, cfg.LogMaxFiles = 1<<20, 7
	cfg.Modules = map[string]config.Module{"web": {Command: "w", LogMaxFiles: 2}}
	a, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name        string
		req         *allexv1.ModuleSpec
		size, files int64
	}{
		{"command without limits", &allexv1.ModuleSpec{Module: "x", Instance: "x1", Command: "x"}, 1 << 20, 7},
		{"command with limits", &allexv1.ModuleSpec{Module: "x", Instance: "x1", Command: "x", LogMaxSize: 8192, LogMaxFiles: 3}, 8192, 3},
		{"module", &allexv1.ModuleSpec{Module: "web", Instance: "w1"}, 1 << 20, 2},
		{"module overridden by the request", &allexv1.ModuleSpec{Module: "web", Instance: "w1", LogMaxSize: 1 << 30, LogMaxFiles: 9}, 1 << 30, 9},
	} {
		spec, err := a.specFor(tt.req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		s, err := a.spawnerSpec(spec, nil)
		if err != nil || s.LogMaxSize != tt.size || int64(s.LogMaxFiles) != tt.files {
			t.Errorf("%s: size %d files %d (%v), want %d, %d", tt.name, s.LogMaxSize, s.LogMaxFiles, err, tt.size, tt.files)
		}
	}
}

func TestValidateSpecRefusesBadLogLimits(t *testing.T) {
	for _, tt := range []struct {
		size  uint64
		files uint32
		want  string
	}{
		{100, 0, "instance x1: log_max_size: 100 bytes is below the minimum"},
		{1 << 63, 0, "instance x1: log_max_size: 9223372036854775808 is too large"},
		{0, 1001, "instance x1: log_max_files: 1001 is out of range 1-1000"},
	} {
		err := validateSpec(&allexv1.ModuleSpec{Module: "x", Instance: "x1", Command: "x", LogMaxSize: tt.size, LogMaxFiles: tt.files})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("size %d files %d: %v, want ErrInvalid with %q", tt.size, tt.files, err, tt.want)
		}
	}
}

// The logs of an instance no longer in the table are found on disk, and
// only by a valid name.
func TestLogFilesOfARemovedInstance(t *testing.T) {
	dir := t.TempDir()
	a, err := New(Options{Config: config.Default(), LogDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	path := spawner.LogPath(dir, "gone", "stderr")
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("last words\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, done, err := a.LogFiles("gone")
	if err != nil || stderr != path || stdout != spawner.LogPath(dir, "gone", "stdout") {
		t.Fatalf("LogFiles(gone) = %q, %q, %v", stdout, stderr, err)
	}
	select {
	case <-done:
	default:
		t.Error("done is open for an instance that is not running")
	}
	for _, name := range []string{"never-ran", "../stderr/gone", ""} {
		if _, _, _, err := a.LogFiles(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("LogFiles(%q) = %v, want ErrNotFound", name, err)
		}
	}
}

// TestValidateSpecRefusesUnknownKinds: a gRPC spec with an enum value no
// table row has is refused, not run with a default, and each message names
// the choices.
func TestValidateSpecRefusesUnknownKinds(t *testing.T) {
	for _, tt := range []struct {
		spec *allexv1.ModuleSpec
		want string
	}{
		{&allexv1.ModuleSpec{Restart: 7}, "instance x1: unknown restart policy 7 (want never, on-failure or always)"},
		{&allexv1.ModuleSpec{Readiness: 7}, "instance x1: unknown readiness 7 (want none, ports or sdk)"},
		{&allexv1.ModuleSpec{Readiness: allexv1.Readiness_READINESS_PORTS}, `instance x1: "ports" needs at least one protocol`},
		{&allexv1.ModuleSpec{Protocols: []allexv1.Protocol{0}}, "instance x1: unknown protocol PROTOCOL_UNSPECIFIED (want tcp, http or ws)"},
		{&allexv1.ModuleSpec{Protocols: []allexv1.Protocol{1, 1}}, `instance x1: "tcp" is listed twice`},
	} {
		s := tt.spec
		s.Module, s.Instance, s.Command = "x", "x1", "x"
		if err := validateSpec(s); !errors.Is(err, ErrInvalid) || !strings.HasSuffix(err.Error(), tt.want) {
			t.Errorf("%v: %v, want ErrInvalid with %q", s, err, tt.want)
		}
	}
}
