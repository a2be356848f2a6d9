package config

import (
	"fmt"
	"math"
	"time"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ProtocolFromString maps "tcp", "http" and "ws" to allexv1.Protocol.
func ProtocolFromString(s string) (allexv1.Protocol, error) {
	switch s {
	case "tcp":
		return allexv1.Protocol_PROTOCOL_TCP, nil
	case "http":
		return allexv1.Protocol_PROTOCOL_HTTP, nil
	case "ws":
		return allexv1.Protocol_PROTOCOL_WS, nil
	}
	return allexv1.Protocol_PROTOCOL_UNSPECIFIED, fmt.Errorf("unknown protocol %q (want tcp, http or ws)", s)
}

// ProtocolString maps allexv1.Protocol to its name; "" for unspecified or
// unknown values.
func ProtocolString(p allexv1.Protocol) string {
	switch p {
	case allexv1.Protocol_PROTOCOL_TCP:
		return "tcp"
	case allexv1.Protocol_PROTOCOL_HTTP:
		return "http"
	case allexv1.Protocol_PROTOCOL_WS:
		return "ws"
	}
	return ""
}

// Spec converts a (validated) module definition into the ModuleSpec the
// supervisor runs. Defaults for restart and readiness are made explicit;
// zero durations and max restarts stay unset so the supervisor's defaults
// apply. An invalid protocol becomes PROTOCOL_UNSPECIFIED, which the
// spawner refuses, rather than being dropped silently.
func (m Module) Spec(module, instance string, properties map[string]string) *allexv1.ModuleSpec {
	s := &allexv1.ModuleSpec{
		Module:         module,
		Instance:       instance,
		Command:        m.Command,
		Args:           append([]string(nil), m.Args...),
		Env:            copyMap(m.Env),
		Dir:            m.Dir,
		MaxRestarts:    uint32(min(max(m.MaxRestarts, 0), math.MaxUint32)),
		RestartWindow:  durationPB(m.RestartWindow),
		BackoffInitial: durationPB(m.BackoffInitial),
		BackoffMax:     durationPB(m.BackoffMax),
		StopTimeout:    durationPB(m.StopTimeout),
		StartTimeout:   durationPB(m.StartTimeout),
		Properties:     copyMap(properties),
		LogMaxSize:     uint64(max(m.LogMaxSize, 0)),
		LogMaxFiles:    uint32(min(max(m.LogMaxFiles, 0), math.MaxUint32)),
	}
	for _, p := range m.Protocols {
		proto, _ := ProtocolFromString(p)
		s.Protocols = append(s.Protocols, proto)
	}
	switch m.Restart {
	case RestartNever:
		s.Restart = allexv1.RestartPolicy_RESTART_POLICY_NEVER
	case RestartAlways:
		s.Restart = allexv1.RestartPolicy_RESTART_POLICY_ALWAYS
	default:
		s.Restart = allexv1.RestartPolicy_RESTART_POLICY_ON_FAILURE
	}
	switch m.Readiness {
	case ReadinessNone:
		s.Readiness = allexv1.Readiness_READINESS_NONE
	case ReadinessPorts:
		s.Readiness = allexv1.Readiness_READINESS_PORTS
	case ReadinessSDK:
		s.Readiness = allexv1.Readiness_READINESS_SDK
	default:
		s.Readiness = allexv1.Readiness_READINESS_NONE
		if len(m.Protocols) > 0 {
			s.Readiness = allexv1.Readiness_READINESS_PORTS
		}
	}
	return s
}

// InstanceSpec builds the ModuleSpec of one Run entry, fixed ports
// included.
func (c Config) InstanceSpec(in Instance) (*allexv1.ModuleSpec, error) {
	m, ok := c.Modules[in.Module]
	if !ok {
		return nil, fmt.Errorf("instance %q: module %q is not defined in modules", in.Instance, in.Module)
	}
	s := m.Spec(in.Module, in.Instance, in.Properties)
	if len(in.FixedPorts) > 0 {
		s.FixedPorts = make(map[string]uint32, len(in.FixedPorts))
		for proto, port := range in.FixedPorts {
			s.FixedPorts[proto] = uint32(port)
		}
	}
	return s, nil
}

func durationPB(d Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(time.Duration(d))
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
