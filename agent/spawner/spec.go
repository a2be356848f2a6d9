package spawner

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/allex-go/allex/agent/logfile"
	"github.com/allex-go/allex/lanwire"
)

// Policy says when a child that exited on its own is started again.
type Policy int

const (
	// PolicyOnFailure restarts after a non-zero exit, a death by signal, or
	// a run that never became ready. It is the zero value so that it is the
	// default.
	PolicyOnFailure Policy = iota
	// PolicyNever never restarts.
	PolicyNever
	// PolicyAlways restarts after any exit not caused by Stop or shutdown.
	PolicyAlways
)

func (p Policy) String() string {
	switch p {
	case PolicyOnFailure:
		return "on-failure"
	case PolicyNever:
		return "never"
	case PolicyAlways:
		return "always"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Readiness says how the supervisor learns that a started child is ready.
type Readiness int

const (
	// ReadyNone: ready as soon as it runs.
	ReadyNone Readiness = iota
	// ReadyPorts: ready once every assigned port accepts TCP connections on 127.0.0.1.
	ReadyPorts
	// ReadySDK: ready once the child reports it and the agent calls MarkReady.
	ReadySDK
)

func (r Readiness) String() string {
	switch r {
	case ReadyNone:
		return "none"
	case ReadyPorts:
		return "ports"
	case ReadySDK:
		return "sdk"
	}
	return fmt.Sprintf("Readiness(%d)", int(r))
}

// State is the supervisor's view of its child.
type State int

const (
	StateStarting State = iota
	StateRunning
	StateReady
	StateStopping
	StateExited
	StateBackoff
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateStarting:
		return "starting"
	case StateRunning:
		return "running"
	case StateReady:
		return "ready"
	case StateStopping:
		return "stopping"
	case StateExited:
		return "exited"
	case StateBackoff:
		return "backoff"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// EventKind names a state transition reported through Options.OnEvent.
type EventKind int

const (
	EventStarting EventKind = iota
	EventRunning
	EventReady
	EventStopping
	EventExited
	EventBackoff
	EventFailed
)

func (k EventKind) String() string {
	switch k {
	case EventStarting:
		return "starting"
	case EventRunning:
		return "running"
	case EventReady:
		return "ready"
	case EventStopping:
		return "stopping"
	case EventExited:
		return "exited"
	case EventBackoff:
		return "backoff"
	case EventFailed:
		return "failed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Defaults applied by New to zero-valued Spec fields.
const (
	DefaultMaxRestarts    = 5
	DefaultRestartWindow  = 60 * time.Second
	DefaultBackoffInitial = 200 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultStopTimeout    = 10 * time.Second
	DefaultStartTimeout   = 30 * time.Second
)

// Spec describes one child. Ports are already assigned by the agent.
type Spec struct {
	Module, Instance string

	Command string
	Args    []string
	Env     map[string]string
	Dir     string

	// Ports by protocol: "tcp", "http" or "ws".
	Ports map[string]uint16
	// Vars are extra ALLEX_* variables from the agent, e.g. ALLEX_MASTER_SOCKET.
	Vars map[string]string

	Restart        Policy
	MaxRestarts    int
	RestartWindow  time.Duration
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	StopTimeout    time.Duration
	StartTimeout   time.Duration
	Readiness      Readiness

	// LogDir receives stdout/<Instance>.log and stderr/<Instance>.log; empty
	// sends the child's output to the null device.
	LogDir string
	// LogMaxSize is the size at which each stream's log is rotated,
	// LogMaxFiles how many files it keeps, the live one included; 0 means
	// logfile.DefaultMaxSize and logfile.DefaultMaxFiles.
	LogMaxSize  int64
	LogMaxFiles int

	// Fenced: the child runs under the master's LAN lease: the keeper
	// refuses to start it once the lease has run out and kills its group
	// when the lease ends. Only a Launcher (the keeper) acts on it.
	Fenced bool
}

// portVar maps a protocol allowed as a key of Spec.Ports to the variable it sets.
func portVar(proto string) (string, bool) {
	switch proto {
	case lanwire.ProtoTCP:
		return "ALLEX_TCP_PORT", true
	case lanwire.ProtoHTTP:
		return "ALLEX_HTTP_PORT", true
	case lanwire.ProtoWS:
		return "ALLEX_WS_PORT", true
	}
	return "", false
}

const maxNameLen = 128

// validName accepts what can safely become part of a file name: the instance
// name is used for log files, so no separators, no leading dot.
func validName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%s name is empty", kind)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%s name %.20q... is longer than %d bytes", kind, name, maxNameLen)
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("%s name %q must not start with %q", kind, name, name[0])
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			r == '_' || r == '-' || r == '.' || r == '@'
		if !ok {
			return fmt.Errorf("%s name %q contains %q (allowed: letters, digits, _ - . @)", kind, name, r)
		}
	}
	return nil
}

func validEnvKey(where, k string) error {
	if k == "" {
		return fmt.Errorf("%s: empty variable name", where)
	}
	if strings.ContainsAny(k, "=\x00") {
		return fmt.Errorf("%s: variable name %q contains '=' or NUL", where, k)
	}
	return nil
}

// validate checks spec and returns a copy with defaults filled in.
func (spec Spec) validate() (Spec, error) {
	var errs []error
	if err := validName("module", spec.Module); err != nil {
		errs = append(errs, err)
	}
	if err := validName("instance", spec.Instance); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(spec.Command) == "" {
		errs = append(errs, errors.New("command is empty"))
	}
	if strings.ContainsRune(spec.Command, 0) || strings.ContainsRune(spec.Dir, 0) {
		errs = append(errs, errors.New("command or dir contains NUL"))
	}
	for i, a := range spec.Args {
		if strings.ContainsRune(a, 0) {
			errs = append(errs, fmt.Errorf("arg %d contains NUL", i))
		}
	}
	for k, v := range spec.Env {
		if err := validEnvKey("env", k); err != nil {
			errs = append(errs, err)
		}
		if strings.ContainsRune(v, 0) {
			errs = append(errs, fmt.Errorf("env %s: value contains NUL", k))
		}
	}
	for k, v := range spec.Vars {
		if err := validEnvKey("vars", k); err != nil {
			errs = append(errs, err)
		}
		if strings.ContainsRune(v, 0) {
			errs = append(errs, fmt.Errorf("vars %s: value contains NUL", k))
		}
	}
	for proto, port := range spec.Ports {
		if _, ok := portVar(proto); !ok {
			errs = append(errs, fmt.Errorf("port protocol %q unknown (want tcp, http or ws)", proto))
		}
		if port == 0 {
			errs = append(errs, fmt.Errorf("port for %q is 0; ports must be assigned before spawning", proto))
		}
	}
	if spec.Restart < PolicyOnFailure || spec.Restart > PolicyAlways {
		errs = append(errs, fmt.Errorf("restart policy %d unknown", int(spec.Restart)))
	}
	if spec.Readiness < ReadyNone || spec.Readiness > ReadySDK {
		errs = append(errs, fmt.Errorf("readiness %d unknown", int(spec.Readiness)))
	}
	if spec.Readiness == ReadyPorts && len(spec.Ports) == 0 {
		errs = append(errs, errors.New("readiness by ports needs at least one port"))
	}
	if spec.MaxRestarts < 0 {
		errs = append(errs, fmt.Errorf("max restarts %d is negative", spec.MaxRestarts))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"restart window", spec.RestartWindow},
		{"backoff initial", spec.BackoffInitial},
		{"backoff max", spec.BackoffMax},
		{"stop timeout", spec.StopTimeout},
		{"start timeout", spec.StartTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	if err := logfile.CheckSize(spec.LogMaxSize); err != nil {
		errs = append(errs, fmt.Errorf("log max size: %w", err))
	}
	if err := logfile.CheckFiles(spec.LogMaxFiles); err != nil {
		errs = append(errs, fmt.Errorf("log max files: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return Spec{}, fmt.Errorf("spawner: invalid spec: %w", err)
	}
	fill := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	if spec.MaxRestarts == 0 {
		spec.MaxRestarts = DefaultMaxRestarts
	}
	fill(&spec.RestartWindow, DefaultRestartWindow)
	fill(&spec.BackoffInitial, DefaultBackoffInitial)
	fill(&spec.BackoffMax, DefaultBackoffMax)
	fill(&spec.StopTimeout, DefaultStopTimeout)
	fill(&spec.StartTimeout, DefaultStartTimeout)
	if spec.LogMaxSize == 0 {
		spec.LogMaxSize = logfile.DefaultMaxSize
	}
	if spec.LogMaxFiles == 0 {
		spec.LogMaxFiles = logfile.DefaultMaxFiles
	}
	if spec.BackoffMax < spec.BackoffInitial {
		spec.BackoffMax = spec.BackoffInitial
	}
	return spec, nil
}

// Expand replaces every ${NAME} in s whose NAME is a key of vars. Unknown
// names and an unterminated "${" are left as they are, so text meant for a
// shell survives.
func Expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "${") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i+2:], '}')
		if j < 0 {
			break
		}
		name := s[i+2 : i+2+j]
		b.WriteString(s[:i])
		if v, ok := vars[name]; ok {
			b.WriteString(v)
		} else {
			b.WriteString(s[i : i+3+j])
		}
		s = s[i+3+j:]
	}
	b.WriteString(s)
	return b.String()
}
