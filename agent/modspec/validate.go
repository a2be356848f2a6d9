package modspec

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// FieldError is a Validate error and the ModuleSpec field it is about
// ("protocols[1]", "restart", "readiness", "fixed_ports.tcp"). Err reads
// on its own; callers with their own paths (the config file) prefix
// theirs, the others print Err.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks a spec's protocols, restart policy, readiness and fixed
// ports, returning a *FieldError. A spec with neither a command nor
// protocols gets its protocols from the master's module config later, so
// the rules that need them wait for that.
func Validate(s *allexv1.ModuleSpec) error {
	if err := validateProtocols(s.GetProtocols()); err != nil {
		return err
	}
	if RestartName(s.GetRestart()) == "" && s.GetRestart() != allexv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED {
		return &FieldError{"restart", unknownRestart(s.GetRestart())}
	}
	if ReadinessName(s.GetReadiness()) == "" && s.GetReadiness() != allexv1.Readiness_READINESS_UNSPECIFIED {
		return &FieldError{"readiness", unknownReadiness(s.GetReadiness())}
	}
	if s.GetCommand() == "" && len(s.GetProtocols()) == 0 {
		return nil
	}
	if s.GetReadiness() == allexv1.Readiness_READINESS_PORTS && len(s.GetProtocols()) == 0 {
		return &FieldError{"readiness", fmt.Errorf("%q needs at least one protocol", ReadinessPorts)}
	}
	return validateFixedPorts(s.GetFixedPorts(), s.GetProtocols())
}

func validateProtocols(ps []allexv1.Protocol) error {
	for i, p := range ps {
		field := fmt.Sprintf("protocols[%d]", i)
		if ProtocolName(p) == "" {
			return &FieldError{field, unknownProtocol(p)}
		}
		if slices.Contains(ps[:i], p) {
			return &FieldError{field, fmt.Errorf("%q is listed twice", ProtocolName(p))}
		}
	}
	return nil
}

// validateFixedPorts checks fixed ports in name order, so that the error
// of a spec with several bad ones is always the same.
func validateFixedPorts(fixed map[string]uint32, ps []allexv1.Protocol) error {
	for _, name := range slices.Sorted(maps.Keys(fixed)) {
		port := fixed[name]
		field := "fixed_ports." + name
		if p, err := ProtocolEnum(name); err != nil || !slices.Contains(ps, p) {
			return &FieldError{field, fmt.Errorf("fixed %s port %d: %q is not one of its protocols (%s)", name, port, name, protocolList(ps))}
		}
		if port == 0 || port > 65535 {
			return &FieldError{field, fmt.Errorf("fixed %s port %d out of range 1-65535", name, port)}
		}
	}
	return nil
}

// protocolList names protocols for messages: "tcp,http", or "none".
func protocolList(ps []allexv1.Protocol) string {
	if len(ps) == 0 {
		return "none"
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = ProtocolName(p)
	}
	return strings.Join(names, ",")
}

// Describe is err's text without the field when it is a *FieldError: for
// callers whose messages name the instance, not a file path.
func Describe(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe.Err.Error()
	}
	return err.Error()
}
