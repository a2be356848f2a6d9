package modspec

import (
	"strings"
	"testing"

	"github.com/allex-go/allex/agent/spawner"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/lanwire"
)

// TestProtocols: every name maps to its enum and back; the table covers
// lanwire's names and every enum value of the proto, and each enum is
// PROTOCOL_<NAME>, the convention the child library relies on.
func TestProtocols(t *testing.T) {
	want := map[string]allexv1.Protocol{
		"tcp": allexv1.Protocol_PROTOCOL_TCP, "http": allexv1.Protocol_PROTOCOL_HTTP, "ws": allexv1.Protocol_PROTOCOL_WS,
	}
	for _, name := range lanwire.Protocols {
		p, err := ProtocolEnum(name)
		if err != nil || p != want[name] || ProtocolName(p) != name {
			t.Errorf("%q -> %v, %v -> %q", name, p, err, ProtocolName(p))
		}
		if got, err := ProtocolNameChecked(p); err != nil || got != name {
			t.Errorf("ProtocolNameChecked(%v) = %q, %v", p, got, err)
		}
		if p.String() != "PROTOCOL_"+strings.ToUpper(name) {
			t.Errorf("%q is %v, not PROTOCOL_%s", name, p, strings.ToUpper(name))
		}
	}
	for v := range allexv1.Protocol_name {
		if p := allexv1.Protocol(v); p != allexv1.Protocol_PROTOCOL_UNSPECIFIED && ProtocolName(p) == "" {
			t.Errorf("%v has no row", p)
		}
	}
	for _, bad := range []string{"", "udp", "TCP", "tcp "} {
		p, err := ProtocolEnum(bad)
		if err == nil || p != allexv1.Protocol_PROTOCOL_UNSPECIFIED || !strings.Contains(err.Error(), `unknown protocol "`+bad+`" (want tcp, http or ws)`) {
			t.Errorf("ProtocolEnum(%q) = %v, %v", bad, p, err)
		}
	}
	for _, bad := range []allexv1.Protocol{allexv1.Protocol_PROTOCOL_UNSPECIFIED, 42} {
		if s := ProtocolName(bad); s != "" {
			t.Errorf("ProtocolName(%v) = %q", bad, s)
		}
		if _, err := ProtocolNameChecked(bad); err == nil || !strings.Contains(err.Error(), "(want tcp, http or ws)") {
			t.Errorf("ProtocolNameChecked(%v) = %v", bad, err)
		}
	}
}

// TestRestarts: names to enums and back, enums to the supervisor's
// policies, the default for unspecified, and refusals naming the choices.
func TestRestarts(t *testing.T) {
	tests := []struct {
		name   string
		enum   allexv1.RestartPolicy
		policy spawner.Policy
	}{
		{"never", allexv1.RestartPolicy_RESTART_POLICY_NEVER, spawner.PolicyNever},
		{"on-failure", allexv1.RestartPolicy_RESTART_POLICY_ON_FAILURE, spawner.PolicyOnFailure},
		{"always", allexv1.RestartPolicy_RESTART_POLICY_ALWAYS, spawner.PolicyAlways},
	}
	for _, tt := range tests {
		e, err := RestartEnum(tt.name)
		if err != nil || e != tt.enum || RestartName(e) != tt.name {
			t.Errorf("%q -> %v, %v -> %q", tt.name, e, err, RestartName(e))
		}
		if p, err := SpawnerPolicy(tt.enum); err != nil || p != tt.policy {
			t.Errorf("SpawnerPolicy(%v) = %v, %v; want %v", tt.enum, p, err, tt.policy)
		}
	}
	for v := range allexv1.RestartPolicy_name {
		if r := allexv1.RestartPolicy(v); r != allexv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED && RestartName(r) == "" {
			t.Errorf("%v has no row", r)
		}
	}
	if e, err := RestartEnum(""); err != nil || e != allexv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED {
		t.Errorf(`RestartEnum("") = %v, %v`, e, err)
	}
	if p, err := SpawnerPolicy(allexv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED); err != nil || p != spawner.PolicyOnFailure {
		t.Errorf("SpawnerPolicy(unspecified) = %v, %v; want on-failure", p, err)
	}
	if e, err := RestartEnum("sometimes"); err == nil || e != allexv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED || err.Error() != `"sometimes": want never, on-failure or always` {
		t.Errorf("RestartEnum(sometimes) = %v, %v", e, err)
	}
	if _, err := SpawnerPolicy(9); err == nil || !strings.Contains(err.Error(), "unknown restart policy 9 (want never, on-failure or always)") {
		t.Errorf("SpawnerPolicy(9) = %v", err)
	}
	if s := RestartName(9); s != "" {
		t.Errorf("RestartName(9) = %q", s)
	}
}

// TestReadinesses: as TestRestarts; unspecified means ports when the child
// gets ports, none otherwise.
func TestReadinesses(t *testing.T) {
	tests := []struct {
		name  string
		enum  allexv1.Readiness
		ready spawner.Readiness
	}{
		{"none", allexv1.Readiness_READINESS_NONE, spawner.ReadyNone},
		{"ports", allexv1.Readiness_READINESS_PORTS, spawner.ReadyPorts},
		{"sdk", allexv1.Readiness_READINESS_SDK, spawner.ReadySDK},
	}
	for _, tt := range tests {
		e, err := ReadinessEnum(tt.name)
		if err != nil || e != tt.enum || ReadinessName(e) != tt.name {
			t.Errorf("%q -> %v, %v -> %q", tt.name, e, err, ReadinessName(e))
		}
		for _, hasPorts := range []bool{false, true} {
			if r, err := SpawnerReadiness(tt.enum, hasPorts); err != nil || r != tt.ready {
				t.Errorf("SpawnerReadiness(%v, %v) = %v, %v; want %v", tt.enum, hasPorts, r, err, tt.ready)
			}
		}
	}
	for v := range allexv1.Readiness_name {
		if r := allexv1.Readiness(v); r != allexv1.Readiness_READINESS_UNSPECIFIED && ReadinessName(r) == "" {
			t.Errorf("%v has no row", r)
		}
	}
	if e, err := ReadinessEnum(""); err != nil || e != allexv1.Readiness_READINESS_UNSPECIFIED {
		t.Errorf(`ReadinessEnum("") = %v, %v`, e, err)
	}
	unspec := allexv1.Readiness_READINESS_UNSPECIFIED
	if r, err := SpawnerReadiness(unspec, true); err != nil || r != spawner.ReadyPorts {
		t.Errorf("SpawnerReadiness(unspecified, ports) = %v, %v", r, err)
	}
	if r, err := SpawnerReadiness(unspec, false); err != nil || r != spawner.ReadyNone {
		t.Errorf("SpawnerReadiness(unspecified, no ports) = %v, %v", r, err)
	}
	if e, err := ReadinessEnum("maybe"); err == nil || e != unspec || err.Error() != `"maybe": want none, ports or sdk` {
		t.Errorf("ReadinessEnum(maybe) = %v, %v", e, err)
	}
	if _, err := SpawnerReadiness(9, true); err == nil || !strings.Contains(err.Error(), "unknown readiness 9 (want none, ports or sdk)") {
		t.Errorf("SpawnerReadiness(9) = %v", err)
	}
}
