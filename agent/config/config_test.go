package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/agent/portoffice"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/machinesock"
	"github.com/allex-go/allex/lanwire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestWithDefaults(t *testing.T) {
	base := t.TempDir()
	tests := []struct {
		name string
		in   Config
		base string
		want func(c Config) Config // expected, given the result (for the host-derived machine id)
	}{
		{"defaults relative to base", Default(), base, func(c Config) Config {
			d := Default()
			d.LanManagerPort, d.PortRangeSize, d.MachineID = 23552, 1000, c.MachineID
			d.LogMaxSize, d.LogMaxFiles = 10<<20, 5
			d.Socket = machinesock.Default
			if !strings.HasPrefix(machinesock.Default, `\\`) && !filepath.IsAbs(machinesock.Default) {
				d.Socket = filepath.Join(base, machinesock.Default)
			}
			d.StateDir = filepath.Join(base, "allexmaster.d")
			return d
		}},
		{"no base keeps paths relative", Config{StateDir: "st", TokenFile: "tok", Socket: "s.sock"}, "", func(c Config) Config {
			return Config{LanManagerPort: 23552, PortRangeSize: 1000, MachineID: c.MachineID, StateDir: "st", TokenFile: "tok", Socket: "s.sock",
				LogMaxSize: 10 << 20, LogMaxFiles: 5}
		}},
		{"set values kept, relative ones resolved", Config{
			LanManagerPort: 1, PortRangeSize: 5, MachineID: "m", StateDir: "st", TokenFile: "tok", Socket: "s.sock",
			LogMaxSize: 1 << 20, LogMaxFiles: 2,
		}, base, func(Config) Config {
			return Config{LanManagerPort: 1, PortRangeSize: 5, MachineID: "m", StateDir: filepath.Join(base, "st"), LogMaxSize: 1 << 20, LogMaxFiles: 2,
				TokenFile: filepath.Join(base, "tok"), Socket: filepath.Join(base, "s.sock")}
		}},
	}
	rel := Config{StateDir: "st"}.WithDefaults("conf")
	if !filepath.IsAbs(rel.StateDir) || filepath.Base(filepath.Dir(rel.StateDir)) != "conf" {
		t.Errorf("relative base: StateDir = %q, want an absolute path under conf", rel.StateDir)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in.WithDefaults(tt.base)
			if !lanwire.ValidName(got.MachineID) {
				t.Fatalf("MachineID %q is not a valid name", got.MachineID)
			}
			if want := tt.want(got); !reflect.DeepEqual(got, want) {
				t.Fatalf("WithDefaults = %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestRanges(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want map[string]portoffice.Range
	}{
		{"default", Default(), map[string]portoffice.Range{"tcp": {Start: 15000, End: 15999}, "http": {Start: 16000, End: 16999}, "ws": {Start: 17000, End: 17999}}},
		{"ending at 65535", Config{PortRangeStart: PortRanges{TCP: 100, HTTP: 200, WS: 65436}, PortRangeSize: 100},
			map[string]portoffice.Range{"tcp": {Start: 100, End: 199}, "http": {Start: 200, End: 299}, "ws": {Start: 65436, End: 65535}}},
		{"top port", Config{PortRangeStart: PortRanges{TCP: 1, HTTP: 2000, WS: 65535}, PortRangeSize: 1},
			map[string]portoffice.Range{"tcp": {Start: 1, End: 1}, "http": {Start: 2000, End: 2000}, "ws": {Start: 65535, End: 65535}}},
		{"size one", Config{PortRangeStart: PortRanges{TCP: 10, HTTP: 11, WS: 12}, PortRangeSize: 1},
			map[string]portoffice.Range{"tcp": {Start: 10, End: 10}, "http": {Start: 11, End: 11}, "ws": {Start: 12, End: 12}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.cfg.Ranges()
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Ranges = %v, want %v", got, tt.want)
			}
			if err := tt.cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestValidateProgrammatic(t *testing.T) {
	// Values that JSON parsing already refuses but Go code could build.
	tests := []struct {
		name string
		mod  Module
		want string
	}{
		{"negative duration", Module{Command: "x", StopTimeout: Duration(-time.Second)}, "modules.m.stoptimeout: -1s is negative"},
		{"NUL in args", Module{Command: "x", Args: []string{"a\x00b"}}, "modules.m.args[0]: contains a NUL byte"},
		{"NUL in env value", Module{Command: "x", Env: map[string]string{"A": "\x00"}}, "modules.m.env.A: contains a NUL byte"},
		{"negative log size", Module{Command: "x", LogMaxSize: -1}, "modules.m.logmaxsize: -1 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Modules = map[string]Module{"m": tt.mod}
			if err := c.Validate(); err == nil || err.Error() != tt.want {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestResolveToken(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("  s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		want    string
		wantErr string
	}{
		{"none", Config{}, "", ""},
		{"token", Config{Token: "abc"}, "abc", ""},
		{"relative token file", Config{TokenFile: "tok"}, "s3cret", ""},
		{"absolute token file", Config{TokenFile: filepath.Join(dir, "tok")}, "s3cret", ""},
		{"both", Config{Token: "a", TokenFile: "tok"}, "", "set one, not both"},
		{"missing file", Config{TokenFile: "nope"}, "", "tokenfile: "},
		{"empty file", Config{TokenFile: "empty"}, "", "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.ResolveToken(dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ResolveToken = %q, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ResolveToken = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestSpec(t *testing.T) {
	full := Module{
		Command: "/bin/web", Args: []string{"-p", "${ALLEX_HTTP_PORT}"}, Env: map[string]string{"A": "b"}, Dir: "/srv",
		Protocols: []string{"http", "tcp"}, Restart: "always", MaxRestarts: 4,
		RestartWindow: Duration(time.Minute), BackoffInitial: Duration(time.Second), BackoffMax: Duration(time.Hour),
		StopTimeout: Duration(3 * time.Second), StartTimeout: Duration(20 * time.Second), Readiness: "sdk",
		LogMaxSize: 1 << 20, LogMaxFiles: 3,
	}
	tests := []struct {
		name string
		mod  Module
		want *allexv1.ModuleSpec
	}{
		{"everything", full, &allexv1.ModuleSpec{
			Module: "web", Instance: "web1", Command: "/bin/web", Args: []string{"-p", "${ALLEX_HTTP_PORT}"},
			Env: map[string]string{"A": "b"}, Dir: "/srv",
			Protocols: []allexv1.Protocol{allexv1.Protocol_PROTOCOL_HTTP, allexv1.Protocol_PROTOCOL_TCP},
			Restart:   allexv1.RestartPolicy_RESTART_POLICY_ALWAYS, MaxRestarts: 4,
			RestartWindow: durationpb.New(time.Minute), BackoffInitial: durationpb.New(time.Second),
			BackoffMax: durationpb.New(time.Hour), StopTimeout: durationpb.New(3 * time.Second),
			StartTimeout: durationpb.New(20 * time.Second), Readiness: allexv1.Readiness_READINESS_SDK,
			Properties: map[string]string{"k": "v"}, LogMaxSize: 1 << 20, LogMaxFiles: 3,
		}},
		{"defaults without protocols", Module{Command: "c"}, &allexv1.ModuleSpec{
			Module: "web", Instance: "web1", Command: "c", Properties: map[string]string{"k": "v"},
			Restart: allexv1.RestartPolicy_RESTART_POLICY_ON_FAILURE, Readiness: allexv1.Readiness_READINESS_NONE,
		}},
		{"defaults with protocols", Module{Command: "c", Protocols: []string{"ws"}, Restart: "never"}, &allexv1.ModuleSpec{
			Module: "web", Instance: "web1", Command: "c", Properties: map[string]string{"k": "v"},
			Protocols: []allexv1.Protocol{allexv1.Protocol_PROTOCOL_WS},
			Restart:   allexv1.RestartPolicy_RESTART_POLICY_NEVER, Readiness: allexv1.Readiness_READINESS_PORTS,
		}},
		{"explicit none with protocols", Module{Command: "c", Protocols: []string{"ws"}, Readiness: "none", Restart: "on-failure"}, &allexv1.ModuleSpec{
			Module: "web", Instance: "web1", Command: "c", Properties: map[string]string{"k": "v"},
			Protocols: []allexv1.Protocol{allexv1.Protocol_PROTOCOL_WS},
			Restart:   allexv1.RestartPolicy_RESTART_POLICY_ON_FAILURE, Readiness: allexv1.Readiness_READINESS_NONE,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			props := map[string]string{"k": "v"}
			got := tt.mod.Spec("web", "web1", props)
			if !proto.Equal(got, tt.want) {
				t.Fatalf("Spec = %v\nwant %v", got, tt.want)
			}
			// The spec must not alias the config's maps and slices.
			props["k"] = "changed"
			if len(got.Args) > 0 {
				got.Args[0] = "changed"
				if tt.mod.Args[0] == "changed" {
					t.Fatal("Spec aliases Args")
				}
			}
			if got.Properties["k"] != "v" {
				t.Fatal("Spec aliases properties")
			}
		})
	}
}

func TestInstanceSpec(t *testing.T) {
	c := Default()
	c.Modules = map[string]Module{"web": {Command: "w", Protocols: []string{"http"}}}
	c.Run = []Instance{{Module: "web", Instance: "w1", FixedPorts: map[string]uint16{"http": 8080}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := c.InstanceSpec(c.Run[0])
	if err != nil {
		t.Fatal(err)
	}
	if s.GetInstance() != "w1" || s.GetModule() != "web" || !reflect.DeepEqual(s.GetFixedPorts(), map[string]uint32{"http": 8080}) {
		t.Fatalf("InstanceSpec = %v", s)
	}
	if _, err := c.InstanceSpec(Instance{Module: "db", Instance: "d"}); err == nil || !strings.Contains(err.Error(), `module "db" is not defined`) {
		t.Fatalf("InstanceSpec(undefined) = %v", err)
	}
}
