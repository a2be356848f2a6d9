package lanwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/allex-go/allex/internal/jsonkeys"
)

// ErrBadFrame wraps every decoding and validation failure.
var ErrBadFrame = errors.New("bad frame")

// Encode builds one frame.
func Encode(typ string, payload any) ([]byte, error) {
	if _, ok := payloadFor(typ); !ok {
		return nil, fmt.Errorf("encode %q: unknown frame type", typ)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %q: %w", typ, err)
	}
	// The type is one of the constants (checked above), so it needs no
	// escaping: the envelope is written around the payload, not encoded
	// again.
	b := make([]byte, 0, len(data)+len(typ)+20)
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}'), nil
}

// Check reports whether payload is the payload type of typ (e.g. *Down or
// Down for "down") and valid, as Decode would find it, without encoding it.
func Check(typ string, payload any) error {
	want, ok := payloadFor(typ)
	if !ok {
		return fmt.Errorf("%w: unknown type %q", ErrBadFrame, typ)
	}
	wantT := reflect.TypeOf(want)
	switch t := reflect.TypeOf(payload); t {
	case wantT:
	case wantT.Elem():
		// A value encodes as its pointer would; validate through one.
		p := reflect.New(t)
		p.Elem().Set(reflect.ValueOf(payload))
		payload = p.Interface()
	default:
		return fmt.Errorf("%w: %s: payload is %T, want %T", ErrBadFrame, typ, payload, want)
	}
	if v, ok := payload.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrBadFrame, typ, err)
		}
	}
	return nil
}

// Decode parses and validates one frame. It returns the frame type and a
// pointer to the typed payload (e.g. *Hello for "hello"). Unknown types,
// unknown or repeated fields, trailing data, oversize frames and invalid
// payloads are errors wrapping ErrBadFrame; the type is returned when it could be read,
// so the peer can be told which frame was refused.
func Decode(b []byte) (string, any, error) {
	if len(b) > MaxFrameSize {
		return "", nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrBadFrame, len(b), MaxFrameSize)
	}
	var env Envelope
	if err := strictUnmarshal(b, &env); err != nil {
		return "", nil, fmt.Errorf("%w: envelope: %w", ErrBadFrame, err)
	}
	payload, ok := payloadFor(env.Type)
	if !ok {
		return "", nil, fmt.Errorf("%w: unknown type %q", ErrBadFrame, env.Type)
	}
	if err := jsonkeys.Unique(b); err != nil {
		typ := env.Type
		var ke *jsonkeys.Error
		if errors.As(err, &ke) && ke.Path == "" {
			typ = "" // the envelope's own keys: even the type is in doubt
		}
		return typ, nil, fmt.Errorf("%w: %w", ErrBadFrame, err)
	}
	if len(env.Data) == 0 {
		return env.Type, nil, fmt.Errorf("%w: %s: missing data", ErrBadFrame, env.Type)
	}
	if err := strictUnmarshal(env.Data, payload); err != nil {
		return env.Type, nil, fmt.Errorf("%w: %s: %w", ErrBadFrame, env.Type, err)
	}
	if v, ok := payload.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return env.Type, nil, fmt.Errorf("%w: %s: %w", ErrBadFrame, env.Type, err)
		}
	}
	return env.Type, payload, nil
}

func payloadFor(typ string) (any, bool) {
	switch typ {
	case TypeHello:
		return &Hello{}, true
	case TypeClaim:
		return &Claim{}, true
	case TypeSpawned:
		return &Spawned{}, true
	case TypeSpawnFailed:
		return &SpawnFailed{}, true
	case TypeDown:
		return &Down{}, true
	case TypeCapacity:
		return &Capacity{}, true
	case TypeDecline:
		return &Decline{}, true
	case TypeWelcome:
		return &Welcome{}, true
	case TypeNeeds:
		return &Needs{}, true
	case TypeGrant:
		return &Grant{}, true
	case TypeDeny:
		return &Deny{}, true
	case TypeApproved:
		return &Approved{}, true
	case TypeRejected:
		return &Rejected{}, true
	case TypeStop:
		return &Stop{}, true
	case TypeError:
		return &Error{}, true
	}
	return nil, false
}

// strictUnmarshal refuses unknown fields and trailing data.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// DecodeNeed strictly parses and validates one need (admin API body):
// unknown or repeated fields and trailing data are refused.
func DecodeNeed(b []byte) (Need, error) {
	var n Need
	if err := strictUnmarshal(b, &n); err != nil {
		return Need{}, fmt.Errorf("need: %w", err)
	}
	if err := jsonkeys.Unique(b); err != nil {
		return Need{}, fmt.Errorf("need: %w", err)
	}
	if err := n.Validate(); err != nil {
		return Need{}, err
	}
	return n, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidName reports whether s can be a module or instance name: it ends up
// in file names and environment variables, so it is kept plain.
func ValidName(s string) bool { return nameRE.MatchString(s) }

func validatePorts(field string, ps Ports, allowed []string) error {
	for proto, port := range ps {
		if err := CheckProtocol(proto); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if port == 0 {
			return fmt.Errorf("%s.%s: port 0 is not a port", field, proto)
		}
		if allowed != nil && !contains(allowed, proto) {
			return fmt.Errorf("%s.%s: protocol not listed in protocols", field, proto)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Validate checks a need.
func (n Need) Validate() error {
	if !ValidName(n.Instance) {
		return fmt.Errorf("need: instance %q: want 1-128 of [A-Za-z0-9_.-], starting alphanumeric", n.Instance)
	}
	if !ValidName(n.Module) {
		return fmt.Errorf("need %s: module %q: want 1-128 of [A-Za-z0-9_.-], starting alphanumeric", n.Instance, n.Module)
	}
	seen := map[string]bool{}
	for _, p := range n.Protocols {
		if err := CheckProtocol(p); err != nil {
			return fmt.Errorf("need %s: protocols: %w", n.Instance, err)
		}
		if seen[p] {
			return fmt.Errorf("need %s: protocols: %q listed twice", n.Instance, p)
		}
		seen[p] = true
	}
	if err := validatePorts("fixedports", n.FixedPorts, n.Protocols); err != nil {
		return fmt.Errorf("need %s: %w", n.Instance, err)
	}
	if n.Machine != nil && n.Machine.Address != "" {
		if _, err := ParseAddressConstraint(n.Machine.Address); err != nil {
			return fmt.Errorf("need %s: machine.address: %w", n.Instance, err)
		}
	}
	if n.TimeoutMS < 0 || n.TimeoutMS > int64(time.Hour/time.Millisecond) {
		return fmt.Errorf("need %s: timeoutms %d: want 0 (default) to 3600000", n.Instance, n.TimeoutMS)
	}
	return nil
}

// ParseAddressConstraint accepts an IP address or a CIDR prefix.
func ParseAddressConstraint(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is neither an IP nor a CIDR: %w", s, err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP nor a CIDR: %w", s, err)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Allows reports whether a master with this id and address may run the need.
func (n Need) Allows(machineID, address string) bool {
	if n.Machine == nil {
		return true
	}
	if n.Machine.ID != "" && n.Machine.ID != machineID {
		return false
	}
	if n.Machine.Address != "" {
		p, err := ParseAddressConstraint(n.Machine.Address)
		if err != nil {
			return false
		}
		a, err := netip.ParseAddr(address)
		if err != nil || !p.Contains(a.Unmap()) {
			return false
		}
	}
	return true
}

// Validate checks a hello.
func (h *Hello) Validate() error {
	if !ValidName(h.MachineID) {
		return fmt.Errorf("machine %q: want 1-128 of [A-Za-z0-9_.-]", h.MachineID)
	}
	if !ValidIdentity(h.Identity) {
		return fmt.Errorf("identity %q: want 16-128 of [A-Za-z0-9_.-] (the master makes one in its state dir)", h.Identity)
	}
	if _, err := netip.ParseAddr(h.Address); err != nil {
		return fmt.Errorf("address %q: %w", h.Address, err)
	}
	for _, m := range h.Modules {
		if !ValidName(m) {
			return fmt.Errorf("modules: %q is not a module name", m)
		}
	}
	if h.Capacity.MaxProcesses < 0 || h.Capacity.Running < 0 {
		return errors.New("capacity: negative count")
	}
	if h.Protocol < 0 || h.Protocol > Placement {
		return fmt.Errorf("protocol %d: this LAN manager speaks link protocols %d and %d; upgrade it", h.Protocol, ProtocolClaims, Placement)
	}
	for i, r := range h.Running {
		if !ValidName(r.Instance) || !ValidName(r.Module) || r.PID < 0 || r.Epoch == 0 {
			return fmt.Errorf("running[%d]: want instance, module, an epoch and a pid (0: starting)", i)
		}
		if err := validatePorts(fmt.Sprintf("running[%d].ports", i), r.Ports, nil); err != nil {
			return err
		}
	}
	return nil
}

var identityRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{16,128}$`)

// ValidIdentity reports whether s can be a master's identity.
func ValidIdentity(s string) bool { return identityRE.MatchString(s) }

func validInstance(s string) error {
	if !ValidName(s) {
		return fmt.Errorf("instance %q: want 1-128 of [A-Za-z0-9_.-]", s)
	}
	return nil
}

// validCopy checks the instance and epoch every frame about a copy names.
func validCopy(instance string, epoch uint64) error {
	if err := validInstance(instance); err != nil {
		return err
	}
	if epoch == 0 {
		return fmt.Errorf("instance %s: epoch 0: want the epoch of its grant", instance)
	}
	return nil
}

// Validate checks a claim.
func (c *Claim) Validate() error { return validInstance(c.Instance) }

// Validate checks a spawned report.
func (s *Spawned) Validate() error {
	if err := validCopy(s.Instance, s.Epoch); err != nil {
		return err
	}
	if s.PID <= 0 {
		return fmt.Errorf("pid %d: want a positive pid", s.PID)
	}
	return validatePorts("ports", s.Ports, nil)
}

// Validate checks a spawn failure.
func (s *SpawnFailed) Validate() error { return validCopy(s.Instance, s.Epoch) }

// Validate checks a decline.
func (d *Decline) Validate() error { return validCopy(d.Instance, d.Epoch) }

// Validate checks a down report.
func (d *Down) Validate() error { return validCopy(d.Instance, d.Epoch) }

// Validate checks a capacity update.
func (c *Capacity) Validate() error {
	if c.MaxProcesses < 0 || c.Running < 0 {
		return errors.New("negative count")
	}
	return nil
}

// Validate checks a needs list.
func (n *Needs) Validate() error {
	for _, x := range n.Needs {
		if err := x.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks a grant.
func (g *Grant) Validate() error {
	if g.Epoch == 0 {
		return errors.New("epoch 0: want the grant's epoch")
	}
	return g.Need.Validate()
}

// Validate checks a deny.
func (d *Deny) Validate() error { return validInstance(d.Instance) }

// Validate checks an approval.
func (a *Approved) Validate() error { return validCopy(a.Service.Instance, a.Service.Epoch) }

// Validate checks a rejection.
func (r *Rejected) Validate() error { return validCopy(r.Instance, r.Epoch) }

// Validate checks a stop.
func (s *Stop) Validate() error { return validCopy(s.Instance, s.Epoch) }
