package config

import (
	"fmt"
	"math"
	"time"

	"github.com/allex-go/allex/agent/modspec"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

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
		proto, _ := modspec.ProtocolEnum(p)
		s.Protocols = append(s.Protocols, proto)
	}
	s.Restart, _ = modspec.RestartEnum(m.Restart)
	if s.Restart == allexv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED {
		s.Restart = modspec.DefaultRestart
	}
	s.Readiness, _ = modspec.ReadinessEnum(m.Readiness)
	if s.Readiness == allexv1.Readiness_READINESS_UNSPECIFIED {
		s.Readiness = modspec.DefaultReadiness(len(m.Protocols) > 0)
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
