package modspec

import (
	"fmt"

	"github.com/allex-go/allex/agent/spawner"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/lanwire"
)

// Restart policy and readiness names, as a config file and allexctl spell
// them.
const (
	RestartNever     = "never"
	RestartOnFailure = "on-failure"
	RestartAlways    = "always"

	ReadinessNone  = "none"
	ReadinessPorts = "ports"
	ReadinessSDK   = "sdk"
)

// Each table is the whole mapping of its kind; every lookup below walks
// one, so adding a value is adding a row.
var (
	protocols = []struct {
		name string
		enum allexv1.Protocol
	}{
		{lanwire.ProtoTCP, allexv1.Protocol_PROTOCOL_TCP},
		{lanwire.ProtoHTTP, allexv1.Protocol_PROTOCOL_HTTP},
		{lanwire.ProtoWS, allexv1.Protocol_PROTOCOL_WS},
	}
	restarts = []struct {
		name   string
		enum   allexv1.RestartPolicy
		policy spawner.Policy
	}{
		{RestartNever, allexv1.RestartPolicy_RESTART_POLICY_NEVER, spawner.PolicyNever},
		{RestartOnFailure, allexv1.RestartPolicy_RESTART_POLICY_ON_FAILURE, spawner.PolicyOnFailure},
		{RestartAlways, allexv1.RestartPolicy_RESTART_POLICY_ALWAYS, spawner.PolicyAlways},
	}
	readinesses = []struct {
		name  string
		enum  allexv1.Readiness
		ready spawner.Readiness
	}{
		{ReadinessNone, allexv1.Readiness_READINESS_NONE, spawner.ReadyNone},
		{ReadinessPorts, allexv1.Readiness_READINESS_PORTS, spawner.ReadyPorts},
		{ReadinessSDK, allexv1.Readiness_READINESS_SDK, spawner.ReadySDK},
	}
)

// Defaults for a spec that names no restart policy or readiness.
const DefaultRestart = allexv1.RestartPolicy_RESTART_POLICY_ON_FAILURE

// DefaultReadiness is ports when the child gets ports, none otherwise.
func DefaultReadiness(hasPorts bool) allexv1.Readiness {
	if hasPorts {
		return allexv1.Readiness_READINESS_PORTS
	}
	return allexv1.Readiness_READINESS_NONE
}

// ProtocolEnum maps a protocol name to its enum.
func ProtocolEnum(name string) (allexv1.Protocol, error) {
	for _, r := range protocols {
		if r.name == name {
			return r.enum, nil
		}
	}
	return allexv1.Protocol_PROTOCOL_UNSPECIFIED, lanwire.CheckProtocol(name)
}

// ProtocolName maps a protocol enum to its name; "" for unspecified or
// unknown values.
func ProtocolName(p allexv1.Protocol) string {
	for _, r := range protocols {
		if r.enum == p {
			return r.name
		}
	}
	return ""
}

// ProtocolNameChecked is ProtocolName refusing unspecified or unknown
// values, for requests that name one protocol.
func ProtocolNameChecked(p allexv1.Protocol) (string, error) {
	if name := ProtocolName(p); name != "" {
		return name, nil
	}
	return "", unknownProtocol(p)
}

// RestartEnum maps a restart policy name to its enum; "" is unspecified
// (the default applies).
func RestartEnum(name string) (allexv1.RestartPolicy, error) {
	if name == "" {
		return allexv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED, nil
	}
	for _, r := range restarts {
		if r.name == name {
			return r.enum, nil
		}
	}
	return allexv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED, fmt.Errorf("%q: want never, on-failure or always", name)
}

// RestartName maps a restart policy enum to its name; "" for unspecified
// or unknown values.
func RestartName(p allexv1.RestartPolicy) string {
	for _, r := range restarts {
		if r.enum == p {
			return r.name
		}
	}
	return ""
}

// SpawnerPolicy is the supervisor's policy for p; unspecified means
// DefaultRestart.
func SpawnerPolicy(p allexv1.RestartPolicy) (spawner.Policy, error) {
	if p == allexv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED {
		p = DefaultRestart
	}
	for _, r := range restarts {
		if r.enum == p {
			return r.policy, nil
		}
	}
	return 0, unknownRestart(p)
}

// ReadinessEnum maps a readiness name to its enum; "" is unspecified (the
// default applies).
func ReadinessEnum(name string) (allexv1.Readiness, error) {
	if name == "" {
		return allexv1.Readiness_READINESS_UNSPECIFIED, nil
	}
	for _, r := range readinesses {
		if r.name == name {
			return r.enum, nil
		}
	}
	return allexv1.Readiness_READINESS_UNSPECIFIED, fmt.Errorf("%q: want none, ports or sdk", name)
}

// ReadinessName maps a readiness enum to its name; "" for unspecified or
// unknown values.
func ReadinessName(r allexv1.Readiness) string {
	for _, row := range readinesses {
		if row.enum == r {
			return row.name
		}
	}
	return ""
}

// SpawnerReadiness is the supervisor's readiness for r; unspecified means
// DefaultReadiness(hasPorts).
func SpawnerReadiness(r allexv1.Readiness, hasPorts bool) (spawner.Readiness, error) {
	if r == allexv1.Readiness_READINESS_UNSPECIFIED {
		r = DefaultReadiness(hasPorts)
	}
	for _, row := range readinesses {
		if row.enum == r {
			return row.ready, nil
		}
	}
	return 0, unknownReadiness(r)
}

func unknownProtocol(p allexv1.Protocol) error {
	return fmt.Errorf("unknown protocol %v (want tcp, http or ws)", p)
}

func unknownRestart(p allexv1.RestartPolicy) error {
	return fmt.Errorf("unknown restart policy %v (want never, on-failure or always)", p)
}

func unknownReadiness(r allexv1.Readiness) error {
	return fmt.Errorf("unknown readiness %v (want none, ports or sdk)", r)
}
