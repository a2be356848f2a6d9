package modspec

import (
	"errors"
	"testing"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// TestValidate: each rule refuses with the field it is about and a message
// that reads on its own; a spec without command or protocols (completed by
// the master from its config) skips the rules that need its protocols.
func TestValidate(t *testing.T) {
	const (
		tcp   = allexv1.Protocol_PROTOCOL_TCP
		http  = allexv1.Protocol_PROTOCOL_HTTP
		ports = allexv1.Readiness_READINESS_PORTS
	)
	tests := []struct {
		name         string
		spec         *allexv1.ModuleSpec
		field, error string
	}{
		{"ok", &allexv1.ModuleSpec{Command: "c", Protocols: []allexv1.Protocol{tcp, http}, FixedPorts: map[string]uint32{"http": 80},
			Restart: allexv1.RestartPolicy_RESTART_POLICY_ALWAYS, Readiness: ports}, "", ""},
		{"empty", &allexv1.ModuleSpec{}, "", ""},
		{"partial spec waits for its protocols", &allexv1.ModuleSpec{Module: "web", Readiness: ports, FixedPorts: map[string]uint32{"tcp": 9000}}, "", ""},
		{"unspecified protocol", &allexv1.ModuleSpec{Command: "c", Protocols: []allexv1.Protocol{tcp, 0}},
			"protocols[1]", "unknown protocol PROTOCOL_UNSPECIFIED (want tcp, http or ws)"},
		{"unknown protocol", &allexv1.ModuleSpec{Command: "c", Protocols: []allexv1.Protocol{42}},
			"protocols[0]", "unknown protocol 42 (want tcp, http or ws)"},
		{"duplicate protocol", &allexv1.ModuleSpec{Command: "c", Protocols: []allexv1.Protocol{tcp, http, tcp}},
			"protocols[2]", `"tcp" is listed twice`},
		{"unknown restart", &allexv1.ModuleSpec{Command: "c", Restart: 7},
			"restart", "unknown restart policy 7 (want never, on-failure or always)"},
		{"unknown readiness", &allexv1.ModuleSpec{Command: "c", Readiness: 7},
			"readiness", "unknown readiness 7 (want none, ports or sdk)"},
		{"ports readiness without protocols", &allexv1.ModuleSpec{Command: "c", Readiness: ports},
			"readiness", `"ports" needs at least one protocol`},
		{"fixed port without protocols", &allexv1.ModuleSpec{Command: "c", FixedPorts: map[string]uint32{"tcp": 9000}},
			"fixed_ports.tcp", `fixed tcp port 9000: "tcp" is not one of its protocols (none)`},
		{"fixed port of another protocol", &allexv1.ModuleSpec{Command: "c", Protocols: []allexv1.Protocol{http, tcp}, FixedPorts: map[string]uint32{"ws": 9000}},
			"fixed_ports.ws", `fixed ws port 9000: "ws" is not one of its protocols (http,tcp)`},
		{"fixed port of an unknown protocol", &allexv1.ModuleSpec{Module: "m", Protocols: []allexv1.Protocol{tcp}, FixedPorts: map[string]uint32{"udp": 53}},
			"fixed_ports.udp", `fixed udp port 53: "udp" is not one of its protocols (tcp)`},
		{"fixed port 0", &allexv1.ModuleSpec{Command: "c", Protocols: []allexv1.Protocol{tcp}, FixedPorts: map[string]uint32{"tcp": 0}},
			"fixed_ports.tcp", "fixed tcp port 0 out of range 1-65535"},
		{"fixed port too large", &allexv1.ModuleSpec{Command: "c", Protocols: []allexv1.Protocol{tcp}, FixedPorts: map[string]uint32{"tcp": 65536}},
			"fixed_ports.tcp", "fixed tcp port 65536 out of range 1-65535"},
		{"first bad fixed port by name", &allexv1.ModuleSpec{Command: "c", Protocols: []allexv1.Protocol{tcp, http}, FixedPorts: map[string]uint32{"tcp": 0, "http": 0}},
			"fixed_ports.http", "fixed http port 0 out of range 1-65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.spec)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || fe.Err.Error() != tt.error {
				t.Fatalf("Validate = %#v, want %s: %s", err, tt.field, tt.error)
			}
			if err.Error() != tt.field+": "+tt.error || Describe(err) != tt.error {
				t.Errorf("Error() = %q, Describe = %q", err, Describe(err))
			}
		})
	}
	if got := Describe(errors.New("plain")); got != "plain" {
		t.Errorf("Describe(plain) = %q", got)
	}
}
