package spawner

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewValidation(t *testing.T) {
	good := func() Spec {
		return Spec{Module: "mod", Instance: "inst", Command: "/bin/true"}
	}
	tests := []struct {
		name   string
		mutate func(*Spec)
		want   string // substring of the error; empty means valid
	}{
		{"valid", func(*Spec) {}, ""},
		{"valid with ports and vars", func(s *Spec) {
			s.Ports = map[string]uint16{"tcp": 1, "http": 2, "ws": 3}
			s.Vars = map[string]string{"ALLEX_X": "y"}
			s.Readiness = ReadyPorts
		}, ""},
		{"empty command", func(s *Spec) { s.Command = " " }, "command is empty"},
		{"empty module", func(s *Spec) { s.Module = "" }, "module name is empty"},
		{"empty instance", func(s *Spec) { s.Instance = "" }, "instance name is empty"},
		{"instance with slash", func(s *Spec) { s.Instance = "../x" }, "must not start with"},
		{"instance with separator", func(s *Spec) { s.Instance = "a/b" }, `contains '/'`},
		{"instance too long", func(s *Spec) { s.Instance = strings.Repeat("a", 129) }, "longer than 128"},
		{"module with space", func(s *Spec) { s.Module = "a b" }, `contains ' '`},
		{"NUL in arg", func(s *Spec) { s.Args = []string{"a\x00"} }, "arg 0 contains NUL"},
		{"bad env key", func(s *Spec) { s.Env = map[string]string{"A=B": "x"} }, "contains '='"},
		{"empty env key", func(s *Spec) { s.Env = map[string]string{"": "x"} }, "empty variable name"},
		{"NUL in env value", func(s *Spec) { s.Env = map[string]string{"A": "\x00"} }, "value contains NUL"},
		{"bad vars key", func(s *Spec) { s.Vars = map[string]string{"A\x00": "x"} }, "vars: variable name"},
		{"unknown protocol", func(s *Spec) { s.Ports = map[string]uint16{"udp": 5} }, `protocol "udp" unknown`},
		{"port zero", func(s *Spec) { s.Ports = map[string]uint16{"tcp": 0} }, "is 0"},
		{"bad policy", func(s *Spec) { s.Restart = 7 }, "restart policy 7 unknown"},
		{"bad readiness", func(s *Spec) { s.Readiness = -1 }, "readiness -1 unknown"},
		{"ports readiness without ports", func(s *Spec) { s.Readiness = ReadyPorts }, "needs at least one port"},
		{"negative restarts", func(s *Spec) { s.MaxRestarts = -1 }, "max restarts -1 is negative"},
		{"negative stop timeout", func(s *Spec) { s.StopTimeout = -time.Second }, "stop timeout -1s is negative"},
		{"negative start timeout", func(s *Spec) { s.StartTimeout = -time.Second }, "start timeout -1s is negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := good()
			tc.mutate(&spec)
			s, err := New(spec, Options{})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if s == nil {
					t.Fatal("nil supervisor")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	spec, err := Spec{Module: "m", Instance: "i", Command: "x", BackoffInitial: time.Minute}.validate()
	if err != nil {
		t.Fatal(err)
	}
	if spec.Restart != PolicyOnFailure || spec.MaxRestarts != 5 || spec.RestartWindow != time.Minute ||
		spec.BackoffMax != time.Minute || spec.StopTimeout != 10*time.Second || spec.StartTimeout != 30*time.Second {
		t.Fatalf("defaults not applied: %+v", spec)
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "ALLEX_HTTP_PORT": "8080", "E": ""}
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"${A}", "1"},
		{"x${A}y${A}z", "x1y1z"},
		{"-m http.server ${ALLEX_HTTP_PORT}", "-m http.server 8080"},
		{"${UNKNOWN}", "${UNKNOWN}"},
		{"${E}", ""},
		{"$A", "$A"},
		{"$${A}", "$1"},
		{"${A", "${A"},
		{"${A}${", "1${"},
		{"${}", "${}"},
		{"${${A}}", "${${A}}"},
	}
	for _, tc := range tests {
		if got := Expand(tc.in, vars); got != tc.want {
			t.Errorf("Expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"", "${A}", "a${B}c", "${", "}${A", "${A}${UNKNOWN}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// With no known names, Expand must be the identity.
		if got := Expand(s, nil); got != s {
			t.Fatalf("Expand(%q, nil) = %q", s, got)
		}
		// When every "${" opens a known reference, Expand is a plain replace.
		if strings.Count(s, "${") == strings.Count(s, "${A}") {
			want := strings.ReplaceAll(s, "${A}", "a")
			if got := Expand(s, map[string]string{"A": "a"}); got != want {
				t.Fatalf("Expand(%q) = %q, want %q", s, got, want)
			}
		}
	})
}

func TestStringers(t *testing.T) {
	if StateFailed.String() != "failed" || EventBackoff.String() != "backoff" || PolicyAlways.String() != "always" ||
		ReadySDK.String() != "sdk" || State(99).String() != "State(99)" {
		t.Fatal("stringers")
	}
}

// TestDedupEnv: the last entry for a variable wins, in its place, as
// with os/exec.
func TestDedupEnv(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{nil, []string{}},
		{[]string{"A=1", "B=2"}, []string{"A=1", "B=2"}},
		{[]string{"A=1", "B=2", "A=3"}, []string{"B=2", "A=3"}},
		{[]string{"PATH=/bin", "X", "PATH=/usr/bin", "X"}, []string{"PATH=/usr/bin", "X"}},
		{[]string{"A=", "A=x=y"}, []string{"A=x=y"}},
	} {
		if got := dedupEnv(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("dedupEnv(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
