package child

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/machinesock"
	"github.com/allex-go/allex/lanwire"
)

// Names of the variables the master sets in a child's environment.
const (
	EnvModule       = "ALLEX_MODULE"
	EnvInstance     = "ALLEX_INSTANCE"
	EnvTCPPort      = "ALLEX_TCP_PORT"
	EnvHTTPPort     = "ALLEX_HTTP_PORT"
	EnvWSPort       = "ALLEX_WS_PORT"
	EnvPorts        = "ALLEX_PORTS"
	EnvMasterSocket = "ALLEX_MASTER_SOCKET"
	EnvProperties   = "ALLEX_PROPERTIES"
)

// DefaultMasterSocket is where allexmaster serves allex.v1.MachineManager
// unless configured otherwise (a named pipe on Windows). The library never
// falls back to it on its own: a child the master spawned always gets
// ALLEX_MASTER_SOCKET, so its absence means the program was started by hand.
const DefaultMasterSocket = machinesock.Default

// Protocol names used as keys of Env.Ports and arguments of Child.Listen.
const (
	ProtoTCP  = lanwire.ProtoTCP
	ProtoHTTP = lanwire.ProtoHTTP
	ProtoWS   = lanwire.ProtoWS
)

type portVar struct{ name, proto string }

// portVars maps each per-protocol variable to its protocol; the order is the
// order errors are reported in, which keeps them deterministic.
func portVars() [3]portVar {
	return [...]portVar{
		{EnvTCPPort, ProtoTCP},
		{EnvHTTPPort, ProtoHTTP},
		{EnvWSPort, ProtoWS},
	}
}

// Env is what the master told the child through its environment.
type Env struct {
	Module   string
	Instance string
	// Ports holds the assigned port per protocol ("tcp", "http", "ws").
	Ports map[string]uint16
	// MasterSocket is empty when ALLEX_MASTER_SOCKET is unset.
	MasterSocket string
	// Properties is never nil.
	Properties map[string]string
}

// EnvFromEnviron parses the ALLEX_* variables out of environ (as returned by
// os.Environ). It is strict on purpose: a port or JSON value the master did
// not mean to send is an error naming the variable, never silently ignored.
func EnvFromEnviron(environ []string) (Env, error) {
	vars := make(map[string]string)
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "ALLEX_") {
			continue
		}
		// Later entries win, as they do for os/exec.
		vars[k] = v
	}
	env := Env{
		Module:       vars[EnvModule],
		Instance:     vars[EnvInstance],
		MasterSocket: vars[EnvMasterSocket],
		Ports:        make(map[string]uint16),
		Properties:   make(map[string]string),
	}
	if env.Instance == "" {
		return Env{}, fmt.Errorf("%s is not set", EnvInstance)
	}
	if env.Module == "" {
		return Env{}, fmt.Errorf("%s is not set", EnvModule)
	}
	for _, pv := range portVars() {
		s, ok := vars[pv.name]
		if !ok {
			continue
		}
		p, err := parsePort(s)
		if err != nil {
			return Env{}, fmt.Errorf("%s: %w", pv.name, err)
		}
		env.Ports[pv.proto] = p
	}
	if s, ok := vars[EnvPorts]; ok && s != "" {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &raw); err != nil {
			return Env{}, fmt.Errorf("%s: not a JSON object of ports: %w", EnvPorts, err)
		}
		if raw == nil {
			return Env{}, fmt.Errorf("%s: not a JSON object of ports: null", EnvPorts)
		}
		for _, proto := range slices.Sorted(maps.Keys(raw)) {
			if _, err := protocolEnum(proto); err != nil {
				return Env{}, fmt.Errorf("%s: %w", EnvPorts, err)
			}
			p, err := parsePort(string(raw[proto]))
			if err != nil {
				return Env{}, fmt.Errorf("%s: %s: %w", EnvPorts, proto, err)
			}
			if have, ok := env.Ports[proto]; ok && have != p {
				return Env{}, fmt.Errorf("%s: %s port %d disagrees with %s=%d", EnvPorts, proto, p, portVarOf(proto), have)
			}
			env.Ports[proto] = p
		}
	}
	if s, ok := vars[EnvProperties]; ok && s != "" {
		var props map[string]string
		if err := json.Unmarshal([]byte(s), &props); err != nil {
			return Env{}, fmt.Errorf("%s: not a JSON object of strings: %w", EnvProperties, err)
		}
		maps.Copy(env.Properties, props)
	}
	return env, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q: want an integer in 1..65535", s)
	}
	return uint16(n), nil
}

func portVarOf(proto string) string {
	for _, pv := range portVars() {
		if pv.proto == proto {
			return pv.name
		}
	}
	return proto
}

// protocolEnum maps a protocol name to its allex.v1 enum value, named
// PROTOCOL_<NAME> by the proto's convention (agent/modspec's table holds
// the same pairs; the library does not import the agent for it).
func protocolEnum(proto string) (allexv1.Protocol, error) {
	if err := lanwire.CheckProtocol(proto); err != nil {
		return allexv1.Protocol_PROTOCOL_UNSPECIFIED, err
	}
	return allexv1.Protocol(allexv1.Protocol_value["PROTOCOL_"+strings.ToUpper(proto)]), nil
}
