package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/allex-go/allex/agent/config"
	"github.com/allex-go/allex/agent/logfile"
	"github.com/allex-go/allex/agent/modspec"
	"github.com/allex-go/allex/agent/portoffice"
	"github.com/allex-go/allex/agent/spawner"
	"github.com/allex-go/allex/agent/statefile"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/lanwire"
)

// Errors the server maps to gRPC status codes.
var (
	ErrNotFound      = errors.New("no such process")
	ErrExists        = errors.New("instance already running")
	ErrInvalid       = errors.New("invalid request")
	ErrNotRunning    = errors.New("agent is not running (starting up or shutting down)")
	ErrPermission    = errors.New("permission denied")
	ErrExhausted     = errors.New("resource exhausted")
	ErrUnknownModule = errors.New("unknown module")
	// ErrNeedChild: the machine API asked to stop the child of a LAN
	// need, which the LAN manager would only start again.
	ErrNeedChild = errors.New("the process is the child of a LAN need")
)

// Options configures an Agent.
type Options struct {
	Logger hclog.Logger
	// Config is the master configuration with defaults filled.
	Config config.Config
	// Ports is the port office; New builds one from Config when nil.
	Ports *portoffice.Office
	// Socket is the machine socket children are told about.
	Socket string
	// LogDir receives the children's stdout/stderr files.
	LogDir string
	// StateDir holds the table of live children, used to clean up after a
	// master that was killed without stopping them.
	StateDir string
	// Token authenticates the LAN link.
	Token string
	// Identity is this master's identity on the LAN (its state dir's).
	Identity string
	// KeeperCommand runs the keeper that is the parent of the children
	// (package keeper; e.g. {allexmaster, "keeper"}); empty: the agent
	// forks them itself, and the LAN lease is then enforced by the agent
	// alone, not when it is frozen or killed.
	KeeperCommand []string
	Version       string
}

// Agent supervises the machine's children.
type Agent struct {
	log     hclog.Logger
	opts    Options
	ports   *portoffice.Office
	events  *bus
	started time.Time

	mu      sync.Mutex
	journal *statefile.Journal   // live children, for the next master; nil without a state dir
	exits   *spawner.ExitWatcher // nil where unsupported: each supervisor waits itself
	listen  *spawner.ListenProbe // nil where unsupported: readiness probes connect
	devNull *os.File             // every child's stdin; nil: os/exec opens /dev/null per start
	// startSignals carries child starts to trimAfterBursts; buffered so that
	// a burst is counted while the trimmer catches up.
	startSignals chan struct{}
	starts       *spawner.StartGate
	runCtx       context.Context
	procs        map[string]*proc
	live         int // procs whose supervisor has not ended: capacity's Running
	ownerN       uint64
	wg           sync.WaitGroup
	lan          *lan // nil without a LAN manager
	lanErr       error
	keeper       keeperClient // nil: the agent forks the children itself
	running      chan struct{}
}

// proc is one supervised child (one instance) and its bookkeeping.
type proc struct {
	owner    string // port office owner, unique per start
	spec     *allexv1.ModuleSpec
	sup      *spawner.Supervisor
	ports    map[string]uint16
	extra    []*allexv1.PortAssignment
	needID   string
	stdout   string
	stderr   string
	done     chan struct{}
	finalErr error

	// Guarded by Agent.mu. reg is the current run's registration; prevReg
	// a dead run's, kept until that run's exit event (which a restart
	// delivers a few milliseconds after the new start, so after the new
	// child may have registered). runningPID is the pid of the last running event: a
	// registration of a run whose running event is still to come has its
	// registered event published after that one.
	reg        registration
	prevReg    registration
	runningPID int
}

// New builds an agent; Run starts it.
func New(opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Ports == nil {
		po, err := portoffice.New(opts.Config.Ranges())
		if err != nil {
			return nil, fmt.Errorf("port office: %w", err)
		}
		opts.Ports = po
	}
	a := &Agent{
		log:          opts.Logger,
		opts:         opts,
		ports:        opts.Ports,
		events:       newBus(),
		procs:        map[string]*proc{},
		started:      time.Now(),
		running:      make(chan struct{}),
		startSignals: make(chan struct{}, 1024),
		// A few more than the cores: starts block in the kernel only
		// briefly, and beyond that they just add threads.
		starts: spawner.NewStartGate(2 * runtime.GOMAXPROCS(0)),
	}
	if opts.Config.LanManagerAddress != "" {
		// A link that cannot be set up (no token, say) leaves the master
		// running its local children; Run reports the error when it ends.
		a.lan, a.lanErr = a.newLAN()
	}
	return a, nil
}

// Ready is closed once Run has cleaned up after a previous master and
// accepts children.
func (a *Agent) Ready() <-chan struct{} { return a.running }

// Run starts the instances listed in the config and the LAN link, and
// supervises until ctx is done; then it stops every child gracefully
// (telling the LAN manager), and returns once none is left.
func (a *Agent) Run(ctx context.Context) error {
	if a.opts.LogDir != "" {
		if err := os.MkdirAll(a.opts.LogDir, 0o750); err != nil {
			return fmt.Errorf("log dir: %w", err)
		}
	}
	if a.opts.StateDir != "" {
		if err := os.MkdirAll(a.opts.StateDir, 0o750); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	// A keeper an earlier master left on the state dir is stopped first
	// (its children with it), then what the journal still lists.
	if err := a.startKeeper(ctx); err != nil {
		return err
	}
	if a.opts.StateDir != "" {
		a.reapLeftovers()
	}
	// One /dev/null for every child's stdin instead of an open per start.
	if f, err := os.Open(os.DevNull); err == nil {
		a.devNull = f
		defer f.Close()
	}
	// The keeper reaps the children it starts; without it the agent does.
	if a.keeper == nil {
		if w, err := spawner.NewExitWatcher(); err == nil {
			a.exits = w
			defer w.Close()
		} else {
			a.log.Debug("no shared exit watcher; one goroutine per child waits", "error", err)
		}
	}
	if lp, err := spawner.NewListenProbe(); err == nil {
		a.listen = lp
		defer lp.Close()
	} else {
		a.log.Debug("no listen probe; readiness probes connect", "error", err)
	}
	// Children outlive ctx long enough to be stopped; they get their own
	// context, cancelled only after ctx is done.
	childCtx, stopChildren := context.WithCancel(context.WithoutCancel(ctx))
	defer stopChildren()
	linkCtx, stopLink := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLink()

	a.mu.Lock()
	a.runCtx = childCtx
	a.mu.Unlock()
	close(a.running)
	trimDone := make(chan struct{})
	go func() {
		defer close(trimDone)
		trimAfterBursts(linkCtx, a.startSignals, trimQuiet, trimMinStarts, a.freeMemory)
	}()
	defer func() { <-trimDone }()

	for _, inst := range a.opts.Config.Run {
		spec, err := a.opts.Config.InstanceSpec(inst)
		if err == nil {
			_, err = a.Start(spec, "")
		}
		if err != nil {
			a.log.Error("cannot start configured instance", "instance", inst.Instance, "error", err)
		}
	}

	linkDone := make(chan error, 1)
	ctrlDone := make(chan struct{})
	if a.lan != nil {
		go func() { defer close(ctrlDone); a.lan.ctrl.Run(linkCtx) }()
		go func() { linkDone <- a.lan.link.Run(linkCtx) }()
		if a.lan.creds != nil {
			go a.lan.creds.Run(linkCtx)
		}
	} else {
		if a.lanErr != nil {
			a.log.Error("running without the LAN manager", "error", a.lanErr)
		} else {
			a.log.Info("no lanmanageraddress configured; running without a LAN manager")
		}
		close(ctrlDone)
		linkDone <- a.lanErr
	}

	<-ctx.Done()
	a.log.Info("shutting down: stopping children")
	if a.lan != nil {
		a.lan.ctrl.Drain()
	}
	stopChildren()
	a.wg.Wait()
	if a.lan != nil {
		// The down reports go out before the link closes, saying then
		// that no copy runs here.
		a.lan.ctrl.Flush()
	}
	stopLink()
	err := <-linkDone
	<-ctrlDone
	a.closeState()
	a.stopKeeper()
	return err
}

// specFor completes a start request from the module definitions in the
// config: a request naming only module and instance runs the module as
// configured; every other field the request sets overrides the module's
// (env is merged, the request's keys winning).
func (a *Agent) specFor(req *allexv1.ModuleSpec) (*allexv1.ModuleSpec, error) {
	if req.GetCommand() != "" {
		return req, nil
	}
	m, ok := a.opts.Config.Modules[req.GetModule()]
	if !ok {
		return nil, fmt.Errorf("%w %q: not in this master's config and no command given", ErrUnknownModule, req.GetModule())
	}
	spec := m.Spec(req.GetModule(), req.GetInstance(), req.GetProperties())
	if len(req.GetProtocols()) > 0 {
		spec.Protocols = req.GetProtocols()
	}
	if len(req.GetFixedPorts()) > 0 {
		spec.FixedPorts = req.GetFixedPorts()
	}
	if req.GetDir() != "" {
		spec.Dir = req.GetDir()
	}
	if len(req.GetEnv()) > 0 {
		spec.Env = maps.Clone(spec.GetEnv())
		if spec.Env == nil {
			spec.Env = map[string]string{}
		}
		maps.Copy(spec.Env, req.GetEnv())
	}
	if req.GetRestart() != allexv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED {
		spec.Restart = req.GetRestart()
	}
	if req.GetReadiness() != allexv1.Readiness_READINESS_UNSPECIFIED {
		spec.Readiness = req.GetReadiness()
	}
	if req.GetMaxRestarts() != 0 {
		spec.MaxRestarts = req.GetMaxRestarts()
	}
	for _, d := range []struct{ from, to **durationpb.Duration }{
		{&req.RestartWindow, &spec.RestartWindow}, {&req.BackoffInitial, &spec.BackoffInitial},
		{&req.BackoffMax, &spec.BackoffMax}, {&req.StopTimeout, &spec.StopTimeout}, {&req.StartTimeout, &spec.StartTimeout},
	} {
		if *d.from != nil {
			*d.to = *d.from
		}
	}
	if req.GetLogMaxSize() != 0 {
		spec.LogMaxSize = req.GetLogMaxSize()
	}
	if req.GetLogMaxFiles() != 0 {
		spec.LogMaxFiles = req.GetLogMaxFiles()
	}
	return spec, nil
}

// StartProcess starts a child from a (possibly partial) spec.
func (a *Agent) StartProcess(req *allexv1.ModuleSpec) (*allexv1.ProcessInfo, error) {
	spec, err := a.specFor(req)
	if err != nil {
		return nil, err
	}
	return a.Start(spec, "")
}

// Start assigns ports and starts supervising a child. needID ties the
// child to a LAN need ("" for local children).
func (a *Agent) Start(spec *allexv1.ModuleSpec, needID string) (*allexv1.ProcessInfo, error) {
	select {
	case <-a.running:
	default:
		return nil, ErrNotRunning
	}
	spec = proto.Clone(spec).(*allexv1.ModuleSpec)
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.runCtx.Err(); err != nil {
		return nil, fmt.Errorf("%w: shutting down", ErrNotRunning)
	}
	if old, ok := a.procs[spec.GetInstance()]; ok && !isDone(old) {
		return nil, fmt.Errorf("%w: %s", ErrExists, spec.GetInstance())
	}
	a.ownerN++
	p := &proc{
		owner:  spec.GetInstance() + "#" + strconv.FormatUint(a.ownerN, 10),
		spec:   spec,
		needID: needID,
		done:   make(chan struct{}),
	}
	ports, err := a.allocate(p.owner, spec)
	if err != nil {
		return nil, err
	}
	p.ports = ports
	sspec, err := a.spawnerSpec(spec, ports)
	if err != nil {
		a.ports.ReleaseOwner(p.owner)
		return nil, err
	}
	// A copy of a LAN need lives under the lease: the keeper refuses to
	// start it once the lease has run out and kills it when it does.
	sspec.Fenced = needID != ""
	if a.opts.LogDir != "" {
		p.stdout = spawner.LogPath(a.opts.LogDir, spec.GetInstance(), "stdout")
		p.stderr = spawner.LogPath(a.opts.LogDir, spec.GetInstance(), "stderr")
	}
	sup, err := spawner.New(sspec, spawner.Options{
		Logger:  a.log.Named(spec.GetInstance()),
		OnEvent: func(ev spawner.Event) { a.onEvent(p, ev) },
		Shutdown: func(ctx context.Context, pid int, grace time.Duration) error {
			return a.shutdownChild(ctx, p, pid, grace)
		},
		Exits:    a.exits,
		Listen:   a.listen,
		Starts:   a.starts,
		Stdin:    a.devNull,
		Launcher: a.launcher(),
	})
	if err != nil {
		a.ports.ReleaseOwner(p.owner)
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	p.sup = sup
	a.procs[spec.GetInstance()] = p
	a.live++
	a.wg.Add(1)
	go a.supervise(p)
	return a.infoLocked(p), nil
}

func isDone(p *proc) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func validateSpec(s *allexv1.ModuleSpec) error {
	if !lanwire.ValidName(s.GetModule()) {
		return fmt.Errorf("%w: module %q: want 1-128 of [A-Za-z0-9_.-], starting alphanumeric", ErrInvalid, s.GetModule())
	}
	if !lanwire.ValidName(s.GetInstance()) {
		return fmt.Errorf("%w: instance %q: want 1-128 of [A-Za-z0-9_.-], starting alphanumeric", ErrInvalid, s.GetInstance())
	}
	if s.GetCommand() == "" {
		return fmt.Errorf("%w: instance %s: no command", ErrInvalid, s.GetInstance())
	}
	if err := modspec.Validate(s); err != nil {
		return fmt.Errorf("%w: instance %s: %s", ErrInvalid, s.GetInstance(), modspec.Describe(err))
	}
	if size := s.GetLogMaxSize(); size > math.MaxInt64 {
		return fmt.Errorf("%w: instance %s: log_max_size: %d is too large", ErrInvalid, s.GetInstance(), size)
	} else if err := logfile.CheckSize(int64(size)); err != nil {
		return fmt.Errorf("%w: instance %s: log_max_size: %w", ErrInvalid, s.GetInstance(), err)
	}
	if err := logfile.CheckFiles(int(s.GetLogMaxFiles())); err != nil {
		return fmt.Errorf("%w: instance %s: log_max_files: %w", ErrInvalid, s.GetInstance(), err)
	}
	return nil
}

// allocate takes every port the spec asks for, or none.
func (a *Agent) allocate(owner string, spec *allexv1.ModuleSpec) (map[string]uint16, error) {
	ports := map[string]uint16{}
	for _, p := range spec.GetProtocols() {
		name := modspec.ProtocolName(p)
		var err error
		if fixed, ok := spec.GetFixedPorts()[name]; ok {
			err = a.ports.AllocateFixed(name, uint16(fixed), owner)
			ports[name] = uint16(fixed)
		} else {
			var port uint16
			port, err = a.ports.Allocate(name, owner)
			ports[name] = port
		}
		if err != nil {
			a.ports.ReleaseOwner(owner)
			return nil, fmt.Errorf("%w: instance %s: %w", ErrExhausted, spec.GetInstance(), err)
		}
	}
	return ports, nil
}

func (a *Agent) spawnerSpec(s *allexv1.ModuleSpec, ports map[string]uint16) (spawner.Spec, error) {
	vars := map[string]string{"ALLEX_MASTER_SOCKET": a.opts.Socket}
	if len(s.GetProperties()) > 0 {
		b, err := json.Marshal(s.GetProperties())
		if err != nil {
			return spawner.Spec{}, fmt.Errorf("%w: properties: %w", ErrInvalid, err)
		}
		vars["ALLEX_PROPERTIES"] = string(b)
	}
	out := spawner.Spec{
		Module:         s.GetModule(),
		Instance:       s.GetInstance(),
		Command:        s.GetCommand(),
		Args:           s.GetArgs(),
		Env:            s.GetEnv(),
		Dir:            s.GetDir(),
		Ports:          ports,
		Vars:           vars,
		MaxRestarts:    int(s.GetMaxRestarts()),
		RestartWindow:  s.GetRestartWindow().AsDuration(),
		BackoffInitial: s.GetBackoffInitial().AsDuration(),
		BackoffMax:     s.GetBackoffMax().AsDuration(),
		StopTimeout:    s.GetStopTimeout().AsDuration(),
		StartTimeout:   s.GetStartTimeout().AsDuration(),
		LogDir:         a.opts.LogDir,
		LogMaxSize:     int64(s.GetLogMaxSize()),
		LogMaxFiles:    int(s.GetLogMaxFiles()),
	}
	// The master's defaults for a spec without its own limits.
	if out.LogMaxSize == 0 {
		out.LogMaxSize = int64(a.opts.Config.LogMaxSize)
	}
	if out.LogMaxFiles == 0 {
		out.LogMaxFiles = a.opts.Config.LogMaxFiles
	}
	var err error
	if out.Restart, err = modspec.SpawnerPolicy(s.GetRestart()); err != nil {
		return spawner.Spec{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if out.Readiness, err = modspec.SpawnerReadiness(s.GetReadiness(), len(ports) > 0); err != nil {
		return spawner.Spec{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return out, nil
}

// supervise runs one child to its end, then gives its ports back.
func (a *Agent) supervise(p *proc) {
	defer a.wg.Done()
	// The state file gets the child on its running event, once it has a pid.
	err := p.sup.Run(a.runCtx)
	a.ports.ReleaseOwner(p.owner)
	a.mu.Lock()
	p.finalErr = err
	close(p.done)
	a.live--
	a.mu.Unlock()
	a.needEnded(p, err)
}

// onEvent turns a supervisor event into a machine event and drives the
// LAN bookkeeping of need children.
func (a *Agent) onEvent(p *proc, ev spawner.Event) {
	kind := eventKindOf(ev.Kind)
	regLate := 0 // the caller of a registration that came before its run's running event
	if ev.Kind == spawner.EventExited {
		a.recordExited(p, ev.PID)
		a.mu.Lock()
		var sock string
		for _, r := range []*registration{&p.reg, &p.prevReg} {
			if r.run == ev.PID {
				sock = r.socket
				*r = registration{}
			}
		}
		a.mu.Unlock()
		if sock != "" {
			removeLeftSocket(sock)
		}
	}
	if ev.Kind == spawner.EventRunning {
		a.mu.Lock()
		p.runningPID = ev.PID
		if p.reg.run == ev.PID {
			// A run's running event comes once: it registered before it.
			regLate = p.reg.caller
		}
		a.mu.Unlock()
		a.recordRunning(p, ev.PID, ev.StartTicks)
		a.noteStart()
	}
	defer func() {
		if regLate != 0 {
			a.publish(allexv1.EventKind_EVENT_KIND_REGISTERED, p, regLate, "")
		}
	}()
	a.events.publish(&allexv1.Event{
		Time:       timestamppb.New(ev.Time),
		Kind:       kind,
		Instance:   ev.Instance,
		Module:     ev.Module,
		Pid:        int32(ev.PID),
		ExitCode:   int32(ev.ExitCode),
		ExitSignal: ev.Signal,
		Message:    ev.Message,
	})
	a.needEvent(p, ev)
}

// Subscribe streams lifecycle events; cancel ends the subscription.
func (a *Agent) Subscribe(instance string) (<-chan *allexv1.Event, func()) {
	return a.events.subscribe(instance)
}

func (a *Agent) publish(kind allexv1.EventKind, p *proc, pid int, msg string) {
	a.events.publish(&allexv1.Event{
		Time:     timestamppb.Now(),
		Kind:     kind,
		Instance: p.spec.GetInstance(),
		Module:   p.spec.GetModule(),
		Pid:      int32(pid),
		Message:  msg,
	})
}

// List returns every process, sorted by instance.
func (a *Agent) List() []*allexv1.ProcessInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*allexv1.ProcessInfo, 0, len(a.procs))
	for _, p := range a.procs {
		out = append(out, a.infoLocked(p))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetInstance() < out[j].GetInstance() })
	return out
}

// Get returns one process.
func (a *Agent) Get(instance string) (*allexv1.ProcessInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.procs[instance]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, instance)
	}
	return a.infoLocked(p), nil
}

func (a *Agent) infoLocked(p *proc) *allexv1.ProcessInfo {
	st := p.sup.Status()
	info := &allexv1.ProcessInfo{
		Instance:   p.spec.GetInstance(),
		Module:     p.spec.GetModule(),
		Pid:        int32(st.PID),
		State:      stateOf(st.State),
		Restarts:   uint32(st.Restarts),
		ExitCode:   int32(st.ExitCode),
		ExitSignal: st.Signal,
		LastError:  st.LastError,
		Registered: p.reg.run != 0 && p.reg.run == st.PID,
		StdoutLog:  p.stdout,
		StderrLog:  p.stderr,
		NeedId:     p.needID,
		Spec:       p.spec,
		Ports:      portList(p),
	}
	if info.Registered {
		info.ProcessSocket = p.reg.socket
	}
	if !st.StartedAt.IsZero() {
		info.StartedAt = timestamppb.New(st.StartedAt)
	}
	if !st.StateSince.IsZero() {
		info.StateSince = timestamppb.New(st.StateSince)
	}
	if isDone(p) && p.finalErr != nil && info.LastError == "" {
		info.LastError = p.finalErr.Error()
	}
	return info
}

func portList(p *proc) []*allexv1.PortAssignment {
	var out []*allexv1.PortAssignment
	for _, name := range lanwire.Protocols {
		if port, ok := p.ports[name]; ok {
			proto, _ := modspec.ProtocolEnum(name)
			out = append(out, &allexv1.PortAssignment{Protocol: proto, Port: uint32(port)})
		}
	}
	return append(out, p.extra...)
}

// eventKindOf maps a supervisor event onto the API's; it runs for every
// event, so it is a switch rather than a map built per call.
func eventKindOf(k spawner.EventKind) allexv1.EventKind {
	switch k {
	case spawner.EventStarting:
		return allexv1.EventKind_EVENT_KIND_STARTING
	case spawner.EventRunning:
		return allexv1.EventKind_EVENT_KIND_RUNNING
	case spawner.EventReady:
		return allexv1.EventKind_EVENT_KIND_READY
	case spawner.EventStopping:
		return allexv1.EventKind_EVENT_KIND_STOPPING
	case spawner.EventExited:
		return allexv1.EventKind_EVENT_KIND_EXITED
	case spawner.EventBackoff:
		return allexv1.EventKind_EVENT_KIND_BACKOFF
	case spawner.EventFailed:
		return allexv1.EventKind_EVENT_KIND_FAILED
	}
	return allexv1.EventKind_EVENT_KIND_UNSPECIFIED
}

func stateOf(s spawner.State) allexv1.ProcessState {
	switch s {
	case spawner.StateStarting:
		return allexv1.ProcessState_PROCESS_STATE_STARTING
	case spawner.StateRunning:
		return allexv1.ProcessState_PROCESS_STATE_RUNNING
	case spawner.StateReady:
		return allexv1.ProcessState_PROCESS_STATE_READY
	case spawner.StateStopping:
		return allexv1.ProcessState_PROCESS_STATE_STOPPING
	case spawner.StateExited:
		return allexv1.ProcessState_PROCESS_STATE_EXITED
	case spawner.StateBackoff:
		return allexv1.ProcessState_PROCESS_STATE_BACKOFF
	case spawner.StateFailed:
		return allexv1.ProcessState_PROCESS_STATE_FAILED
	}
	return allexv1.ProcessState_PROCESS_STATE_UNSPECIFIED
}

// Stop stops a child gracefully; remove also forgets it.
func (a *Agent) Stop(ctx context.Context, instance string, remove bool) (*allexv1.ProcessInfo, error) {
	a.mu.Lock()
	p, ok := a.procs[instance]
	a.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, instance)
	}
	if err := p.sup.Stop(ctx); err != nil {
		return nil, fmt.Errorf("stop %s: %w", instance, err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("stop %s: %w", instance, ctx.Err())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	info := a.infoLocked(p)
	if remove && a.procs[instance] == p {
		delete(a.procs, instance)
		a.events.publish(&allexv1.Event{Time: timestamppb.Now(), Kind: allexv1.EventKind_EVENT_KIND_REMOVED, Instance: instance, Module: p.spec.GetModule()})
	}
	return info, nil
}

// StopProcess is Stop as the machine API asks it: a running child of a
// LAN need is refused unless force, since the LAN manager would offer the
// need again at once; with force it is stopped and the need re-offered.
func (a *Agent) StopProcess(ctx context.Context, instance string, remove, force bool) (*allexv1.ProcessInfo, error) {
	a.mu.Lock()
	p, ok := a.procs[instance]
	a.mu.Unlock()
	if ok && p.needID != "" && !force && !isDone(p) {
		return nil, needChildError(instance)
	}
	return a.Stop(ctx, instance, remove)
}

// needChildError is ErrNeedChild, saying what to do instead.
type needChildError string

func (e needChildError) Error() string {
	return fmt.Sprintf("%s is a LAN need; the LAN manager would start it again: remove the need with `allexctl needs rm %s`, or use -force to stop this copy (it is re-offered)", string(e), string(e))
}

func (e needChildError) Is(target error) bool { return target == ErrNeedChild }

// Restart stops and starts a child again. A finished child is started
// anew with the same spec (and fresh ports).
func (a *Agent) Restart(ctx context.Context, instance string) (*allexv1.ProcessInfo, error) {
	a.mu.Lock()
	p, ok := a.procs[instance]
	a.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, instance)
	}
	if isDone(p) {
		if p.needID != "" {
			return nil, fmt.Errorf("%w: %s belongs to LAN need %s; the LAN manager restarts it", ErrInvalid, instance, p.needID)
		}
		return a.Start(p.spec, "")
	}
	if err := p.sup.Restart(ctx); err != nil {
		return nil, fmt.Errorf("restart %s: %w", instance, err)
	}
	return a.Get(instance)
}

// LogFiles returns the stdout and stderr log paths of an instance, and a
// channel closed once its child is done for good. The logs of an instance
// no longer in the table (removed, or run by an earlier master) stay
// readable while its files are there.
func (a *Agent) LogFiles(instance string) (stdout, stderr string, done <-chan struct{}, err error) {
	a.mu.Lock()
	p, ok := a.procs[instance]
	a.mu.Unlock()
	if ok && p.stdout != "" {
		return p.stdout, p.stderr, p.done, nil
	}
	if ok || a.opts.LogDir == "" {
		return "", "", nil, fmt.Errorf("%w: %s has no log files (no log dir)", ErrNotFound, instance)
	}
	// The name becomes part of a path: only a valid one may.
	if lanwire.ValidName(instance) {
		stdout = spawner.LogPath(a.opts.LogDir, instance, "stdout")
		stderr = spawner.LogPath(a.opts.LogDir, instance, "stderr")
		for _, path := range []string{stdout, stderr} {
			if _, err := os.Stat(path); err == nil {
				return stdout, stderr, closedChan, nil
			}
		}
	}
	return "", "", nil, fmt.Errorf("%w: %s", ErrNotFound, instance)
}

// closedChan is the done channel of an instance that is not running.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Status summarizes the agent.
func (a *Agent) Status() *allexv1.StatusResponse {
	a.mu.Lock()
	var n, ready uint32
	for _, p := range a.procs {
		if isDone(p) {
			continue
		}
		n++
		if p.sup.Status().State == spawner.StateReady {
			ready++
		}
	}
	a.mu.Unlock()
	st := &allexv1.StatusResponse{
		Version:           a.opts.Version,
		Pid:               int32(os.Getpid()),
		Socket:            a.opts.Socket,
		StartedAt:         timestamppb.New(a.started),
		MachineId:         a.opts.Config.MachineID,
		LanManagerAddress: a.lanAddress(),
		LanLinkState:      a.linkState(),
		Processes:         n,
		Ready:             ready,
	}
	for _, u := range a.ports.Usage() {
		p, _ := modspec.ProtocolEnum(u.Protocol)
		st.PortRanges = append(st.PortRanges, &allexv1.PortRangeUsage{Protocol: p, RangeStart: uint32(u.Start), RangeEnd: uint32(u.End), InUse: uint32(u.InUse)})
	}
	return st
}

func (a *Agent) lanAddress() string {
	return strings.Join(a.opts.Config.LanManagers(), ",")
}
