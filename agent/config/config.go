package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/allex-go/allex/agent/logfile"
	"github.com/allex-go/allex/agent/modspec"
	"github.com/allex-go/allex/agent/portoffice"
	"github.com/allex-go/allex/internal/machinesock"
	"github.com/allex-go/allex/lanwire"
)

// FileName is the config file's name in the master's working directory.
const FileName = "allexmasterconfig.json"

// Defaults filled in by WithDefaults.
const (
	DefaultLanManagerPort = 23552
	DefaultPortRangeSize  = 1000
	DefaultStateDir       = "allexmaster.d"
)

// PortRanges holds one port number per protocol.
type PortRanges struct {
	TCP  uint16 `json:"tcp"`
	HTTP uint16 `json:"http"`
	WS   uint16 `json:"ws"`
}

func (p PortRanges) byProtocol() [3]struct {
	name string
	port uint16
} {
	return [3]struct {
		name string
		port uint16
	}{{lanwire.ProtoTCP, p.TCP}, {lanwire.ProtoHTTP, p.HTTP}, {lanwire.ProtoWS, p.WS}}
}

// Config is the content of allexmasterconfig.json.
type Config struct {
	// LanManagerAddress is a host name or IP, with an optional :port, or
	// several comma-separated (LAN managers sharing etcd: the link tries
	// the next when one fails or stands by); "" disables the LAN link.
	LanManagerAddress string `json:"lanmanageraddress"`
	// LanManagerPort defaults to DefaultLanManagerPort.
	LanManagerPort int        `json:"lanmanagerport,omitempty"`
	PortRangeStart PortRanges `json:"portrangestart"`
	// PortRangeSize is the number of ports per protocol (default
	// DefaultPortRangeSize); a range must end by 65535.
	PortRangeSize int `json:"portrangesize,omitempty"`
	// Socket defaults to machinesock.Default.
	Socket string `json:"socket,omitempty"`
	// SocketGroup, a group name or id, owns the socket with the master's
	// user: its members may use allexctl on this machine (mode 0660).
	SocketGroup string `json:"socketgroup,omitempty"`
	// MachineID defaults to the host name.
	MachineID string `json:"machineid,omitempty"`
	// Address is the IP announced to the LAN manager; by default the
	// local address of the link connection.
	Address string `json:"address,omitempty"`
	// Token is the LAN link's shared token; TokenFile names a file
	// holding it instead (relative to the config file's directory).
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"tokenfile,omitempty"`
	// LanInsecure links over plain WebSockets with Token as a shared
	// secret, to a LAN manager run with -insecure. Otherwise the link
	// speaks TLS with the master's certificate, got by joining with
	// Token (a join token).
	LanInsecure bool `json:"laninsecure,omitempty"`
	// MaxProcesses caps the children; 0 means unlimited.
	MaxProcesses int `json:"maxprocesses,omitempty"`
	// StateDir holds logs and state files; default DefaultStateDir next
	// to the config file.
	StateDir string `json:"statedir,omitempty"`
	// LogMaxSize and LogMaxFiles are the modules' defaults for their own
	// keys of the same names; 0 means logfile's defaults.
	LogMaxSize  ByteSize `json:"logmaxsize,omitempty"`
	LogMaxFiles int      `json:"logmaxfiles,omitempty"`
	// Modules this master can run, by module name.
	Modules map[string]Module `json:"modules,omitempty"`
	// Run lists instances started at boot without a LAN manager.
	Run []Instance `json:"run,omitempty"`
}

// Module says how to run one kind of service.
type Module struct {
	Command string            `json:"command"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Dir     string            `json:"dir,omitempty"`
	// Protocols is a subset of tcp, http, ws without duplicates.
	Protocols []string `json:"protocols,omitempty"`
	// Restart is never, on-failure (default) or always.
	Restart        string   `json:"restart,omitempty"`
	MaxRestarts    int      `json:"maxrestarts,omitempty"`
	RestartWindow  Duration `json:"restartwindow,omitempty"`
	BackoffInitial Duration `json:"backoffinitial,omitempty"`
	BackoffMax     Duration `json:"backoffmax,omitempty"`
	StopTimeout    Duration `json:"stoptimeout,omitempty"`
	StartTimeout   Duration `json:"starttimeout,omitempty"`
	// Readiness is none, ports or sdk; default ports when Protocols is
	// set, none otherwise.
	Readiness string `json:"readiness,omitempty"`
	// LogMaxSize is the size at which each of the child's stdout and
	// stderr logs is rotated, LogMaxFiles how many files each keeps (the
	// live one included); 0 means the master's default.
	LogMaxSize  ByteSize `json:"logmaxsize,omitempty"`
	LogMaxFiles int      `json:"logmaxfiles,omitempty"`
}

// Instance is one instance of a module to start at boot.
type Instance struct {
	Module     string            `json:"module"`
	Instance   string            `json:"instance"`
	Properties map[string]string `json:"properties,omitempty"`
	FixedPorts map[string]uint16 `json:"fixedports,omitempty"`
}

// Default is the configuration written when no file exists.
func Default() Config {
	return Config{
		LanManagerAddress: "127.0.0.1",
		PortRangeStart:    PortRanges{TCP: 15000, HTTP: 16000, WS: 17000},
	}
}

const nameWant = "want 1-128 of [A-Za-z0-9_.-], starting alphanumeric"

// Validate checks the whole configuration and returns every problem
// (errors.Join, in file order), each naming the field path (e.g.
// "modules.web.restart"), so that one mistake does not hide the others.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := validLanManagers(c.LanManagerAddress); err != nil {
		add("lanmanageraddress: %w", err)
	}
	if c.LanManagerPort != 0 && (c.LanManagerPort < 1 || c.LanManagerPort > 65535) {
		add("lanmanagerport: %d is out of range 1-65535", c.LanManagerPort)
	}
	if err := c.validateRanges(); err != nil {
		errs = append(errs, err)
	}
	if c.MachineID != "" && !lanwire.ValidName(c.MachineID) {
		add("machineid: %q: %s", c.MachineID, nameWant)
	}
	if c.Address != "" {
		if _, err := netip.ParseAddr(c.Address); err != nil {
			add("address: %q is not an IP address", c.Address)
		}
	}
	if c.Token != "" && c.TokenFile != "" {
		add("token, tokenfile: set one, not both")
	}
	if c.MaxProcesses < 0 {
		add("maxprocesses: %d is negative (0 means unlimited)", c.MaxProcesses)
	}
	if err := validLogLimits("", c.LogMaxSize, c.LogMaxFiles); err != nil {
		return err
	}
	names := make([]string, 0, len(c.Modules))
	for name := range c.Modules {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !lanwire.ValidName(name) {
			add("modules: %q is not a module name (%s)", name, nameWant)
			continue
		}
		if err := c.Modules[name].validate("modules." + name); err != nil {
			errs = append(errs, err)
		}
	}
	instances := map[string]int{}
	fixed := map[uint16]string{}
	for i, in := range c.Run {
		if err := c.validateRun(i, in, instances, fixed); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// validateRanges checks portrangestart and portrangesize: every range
// lies within 1-65535 and no two overlap.
func (c Config) validateRanges() error {
	if c.PortRangeSize < 0 || c.PortRangeSize > 65535 {
		return fmt.Errorf("portrangesize: %d is out of range 1-65535", c.PortRangeSize)
	}
	size := c.rangeSize()
	ps := c.PortRangeStart.byProtocol()
	for _, p := range ps {
		if p.port == 0 {
			return fmt.Errorf("portrangestart.%s: 0 is out of range 1-65535", p.name)
		}
		if end := int(p.port) + size - 1; end > 65535 {
			return fmt.Errorf("portrangestart.%s: range %d-%d (portrangesize %d) ends past 65535: lower portrangestart.%s to %d or portrangesize to %d",
				p.name, p.port, end, size, p.name, 65536-size, 65536-int(p.port))
		}
	}
	ranges := c.Ranges()
	for i, a := range ps {
		for _, b := range ps[i+1:] {
			ra, rb := ranges[a.name], ranges[b.name]
			if ra.Start <= rb.End && rb.Start <= ra.End {
				return fmt.Errorf("portrangestart: %s range %d-%d overlaps %s range %d-%d (portrangesize %d)",
					a.name, ra.Start, ra.End, b.name, rb.Start, rb.End, size)
			}
		}
	}
	return nil
}

// validateRun checks run[i]; instances and fixed collect the names and
// fixed ports of the entries before it.
func (c Config) validateRun(i int, in Instance, instances map[string]int, fixed map[uint16]string) error {
	path := fmt.Sprintf("run[%d]", i)
	m, ok := c.Modules[in.Module]
	if !ok {
		return fmt.Errorf("%s.module: %q is not defined in modules", path, in.Module)
	}
	if !lanwire.ValidName(in.Instance) {
		return fmt.Errorf("%s.instance: %q: %s", path, in.Instance, nameWant)
	}
	if j, dup := instances[in.Instance]; dup {
		return fmt.Errorf("%s.instance: %q is already run[%d]", path, in.Instance, j)
	}
	instances[in.Instance] = i
	for _, proto := range sortedKeys(in.FixedPorts) {
		port := in.FixedPorts[proto]
		fp := path + ".fixedports." + proto
		if !contains(m.Protocols, proto) {
			return fmt.Errorf("%s: module %q does not use protocol %q (its protocols: %v)", fp, in.Module, proto, m.Protocols)
		}
		if port == 0 {
			return fmt.Errorf("%s: 0 is out of range 1-65535", fp)
		}
		if other, dup := fixed[port]; dup {
			return fmt.Errorf("%s: port %d is already fixed by %s", fp, port, other)
		}
		fixed[port] = fp
	}
	return nil
}

func (m Module) validate(path string) error {
	if m.Command == "" {
		return fmt.Errorf("%s.command: missing", path)
	}
	if strings.ContainsRune(m.Command, 0) {
		return fmt.Errorf("%s.command: contains a NUL byte", path)
	}
	for i, a := range m.Args {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("%s.args[%d]: contains a NUL byte", path, i)
		}
	}
	for _, k := range sortedKeys(m.Env) {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("%s.env: %q is not an environment variable name", path, k)
		}
		if strings.ContainsRune(m.Env[k], 0) {
			return fmt.Errorf("%s.env.%s: contains a NUL byte", path, k)
		}
	}
	if strings.ContainsRune(m.Dir, 0) {
		return fmt.Errorf("%s.dir: contains a NUL byte", path)
	}
	if err := m.validateKinds(path); err != nil {
		return err
	}
	if m.MaxRestarts < 0 {
		return fmt.Errorf("%s.maxrestarts: %d is negative", path, m.MaxRestarts)
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{
		{"restartwindow", m.RestartWindow}, {"backoffinitial", m.BackoffInitial},
		{"backoffmax", m.BackoffMax}, {"stoptimeout", m.StopTimeout}, {"starttimeout", m.StartTimeout},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s.%s: %v is negative", path, d.name, d.v)
		}
	}
	if m.BackoffMax != 0 && m.BackoffMax < m.BackoffInitial {
		return fmt.Errorf("%s.backoffmax: %v is less than backoffinitial %v", path, m.BackoffMax, m.BackoffInitial)
	}
	return validLogLimits(path+".", m.LogMaxSize, m.LogMaxFiles)
}

// validateKinds checks the names of protocols, restart and readiness
// with modspec's tables, then the module's spec with modspec.Validate, the
// check gRPC Start and allexctl run too.
func (m Module) validateKinds(path string) error {
	for i, p := range m.Protocols {
		if _, err := modspec.ProtocolEnum(p); err != nil {
			return fmt.Errorf("%s.protocols[%d]: %w", path, i, err)
		}
	}
	if _, err := modspec.RestartEnum(m.Restart); err != nil {
		return fmt.Errorf("%s.restart: %w", path, err)
	}
	if _, err := modspec.ReadinessEnum(m.Readiness); err != nil {
		return fmt.Errorf("%s.readiness: %w", path, err)
	}
	if err := modspec.Validate(m.Spec("", "", nil)); err != nil {
		return fmt.Errorf("%s.%w", path, err)
	}
	return nil
}

// validLogLimits checks logmaxsize and logmaxfiles under prefix.
func validLogLimits(prefix string, size ByteSize, files int) error {
	if err := logfile.CheckSize(int64(size)); err != nil {
		return fmt.Errorf("%slogmaxsize: %w", prefix, err)
	}
	if err := logfile.CheckFiles(files); err != nil {
		return fmt.Errorf("%slogmaxfiles: %w", prefix, err)
	}
	return nil
}

// validHost accepts "", an IP address or a DNS host name.
// LanManagers returns the LAN managers' host:port addresses ("" none).
func (c Config) LanManagers() []string {
	if c.LanManagerAddress == "" {
		return nil
	}
	port := c.LanManagerPort
	if port == 0 {
		port = DefaultLanManagerPort
	}
	var out []string
	for _, a := range strings.Split(c.LanManagerAddress, ",") {
		a = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(strings.Trim(a, "[]"), strconv.Itoa(port))
		}
		out = append(out, a)
	}
	return out
}

// validLanManagers checks a comma-separated list of host[:port].
func validLanManagers(list string) error {
	if list == "" {
		return nil
	}
	seen := map[string]bool{}
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		h := strings.Trim(a, "[]")
		if host, port, err := net.SplitHostPort(a); err == nil {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("%q: port %q is out of range 1-65535", a, port)
			}
			h = host
		}
		if h == "" {
			return fmt.Errorf("%q: empty entry in the list", list)
		}
		if err := validHost(h); err != nil {
			if errors.Is(err, errNotHost) {
				return fmt.Errorf("%q is neither an IP address nor a host name (host[:port], no scheme)", a)
			}
			return err
		}
		if seen[a] {
			return fmt.Errorf("%q is listed twice", a)
		}
		seen[a] = true
	}
	return nil
}

var errNotHost = errors.New("neither an IP address nor a host name")

func validHost(h string) error {
	if h == "" {
		return nil
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("%q is too long for a host name", h)
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		ok := label != "" && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
		for _, c := range []byte(label) {
			ok = ok && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_')
		}
		if !ok {
			return fmt.Errorf("%q: %w", h, errNotHost)
		}
	}
	return nil
}

func (c Config) rangeSize() int {
	if c.PortRangeSize == 0 {
		return DefaultPortRangeSize
	}
	return c.PortRangeSize
}

// Ranges returns the port range of each protocol, clipped at 65535
// (Validate refuses a range that needs clipping).
func (c Config) Ranges() map[string]portoffice.Range {
	out := make(map[string]portoffice.Range, 3)
	for _, p := range c.PortRangeStart.byProtocol() {
		end := min(int(p.port)+max(c.rangeSize(), 1)-1, 65535)
		out[p.name] = portoffice.Range{Start: p.port, End: uint16(end)}
	}
	return out
}

// WithDefaults returns c with defaults filled in and relative StateDir,
// Socket and TokenFile paths resolved against baseDir (normally the config
// file's directory; "" leaves them relative to the working directory).
// A relative baseDir is made absolute first, so that ResolveToken(baseDir)
// on the result does not join baseDir twice. Module dirs are left as
// written: the spawner resolves them.
func (c Config) WithDefaults(baseDir string) Config {
	if baseDir != "" {
		if abs, err := filepath.Abs(baseDir); err == nil {
			baseDir = abs
		}
	}
	if c.LanManagerPort == 0 {
		c.LanManagerPort = DefaultLanManagerPort
	}
	if c.PortRangeSize == 0 {
		c.PortRangeSize = DefaultPortRangeSize
	}
	if c.Socket == "" {
		c.Socket = machinesock.Default
	}
	if c.MachineID == "" {
		c.MachineID = hostMachineID()
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.LogMaxSize == 0 {
		c.LogMaxSize = logfile.DefaultMaxSize
	}
	if c.LogMaxFiles == 0 {
		c.LogMaxFiles = logfile.DefaultMaxFiles
	}
	c.StateDir = resolve(baseDir, c.StateDir)
	if !strings.HasPrefix(c.Socket, `\\`) {
		c.Socket = resolve(baseDir, c.Socket)
	}
	if c.TokenFile != "" {
		c.TokenFile = resolve(baseDir, c.TokenFile)
	}
	return c
}

func resolve(base, p string) string {
	if base == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}

// hostMachineID derives a machine id from the host name, replacing the
// characters a machine id may not contain.
func hostMachineID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "allexmaster"
	}
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 128 {
		b = b[:128]
	}
	if !lanwire.ValidName(string(b)) {
		return "allexmaster"
	}
	return string(b)
}

// ResolveToken returns the LAN link token: Token, or the trimmed content of
// TokenFile (relative to baseDir), or "" when neither is set.
func (c Config) ResolveToken(baseDir string) (string, error) {
	switch {
	case c.Token != "" && c.TokenFile != "":
		return "", errors.New("token, tokenfile: set one, not both")
	case c.TokenFile == "":
		return c.Token, nil
	}
	p := resolve(baseDir, c.TokenFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("tokenfile: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("tokenfile: %s is empty", p)
	}
	return tok, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ModuleNames lists the configured modules, sorted.
func (c Config) ModuleNames() []string {
	return slices.Sorted(maps.Keys(c.Modules))
}
