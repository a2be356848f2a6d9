package spawner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/agent/logfile"
	"github.com/allex-go/allex/internal/procfs"
	"github.com/allex-go/allex/internal/tcpcheck"
)

// ErrNotRunning is returned by Restart when Run is not (or no longer) running.
var ErrNotRunning = errors.New("spawner: supervisor is not running")

// Event reports one state transition of a child.
type Event struct {
	Time             time.Time
	Kind             EventKind
	Instance, Module string
	PID              int
	ExitCode         int           // EventExited: exit code, -1 when killed by a signal
	Signal           string        // EventExited: e.g. "SIGKILL"
	Message          string        // why: stop reason, backoff delay, failure
	Restarts         int           // restarts counted against the crash-loop limit so far
	Delay            time.Duration // EventBackoff: wait before the restart (0: at once)
	// StartTicks (EventRunning, Linux) is the child's start time as
	// /proc/<pid>/stat gives it, when the clock read around its fork pins
	// it to one tick; 0 otherwise.
	StartTicks uint64
}

// Status is a snapshot of a supervisor.
type Status struct {
	State      State
	PID        int // 0 when no child is running
	StartedAt  time.Time
	StateSince time.Time
	Restarts   int
	ExitCode   int    // of the last exited child
	Signal     string // of the last exited child
	LastError  string
}

// Options are the agent's hooks into a supervisor.
type Options struct {
	Logger hclog.Logger
	// OnEvent is called synchronously, in order, never concurrently for one
	// supervisor; it must not block long since it holds up supervision, and
	// must not call Stop or Restart itself, as they wait on the caller.
	// Each event is stamped when it happens, but a restart's events are
	// delivered together settleLimit after the new child's start (sooner
	// if that run ends first): the new child may have called in (Register)
	// before its EventRunning arrives.
	OnEvent func(Event)
	// Shutdown, if set, asks the child to stop by itself (the agent calls the
	// child's allex.v1.Process/Shutdown). On error, or when nil, the process
	// group gets SIGTERM instead. Either way SIGKILL follows after grace.
	Shutdown func(ctx context.Context, pid int, grace time.Duration) error
	// Exits, if set, watches for the child's exit, shared with other
	// supervisors; without it the supervisor parks a goroutine per child.
	Exits *ExitWatcher
	// Listen, if set, answers readiness probes from the kernel's socket
	// table, shared with other supervisors; without it, or if it fails,
	// a probe connects to the port.
	Listen *ListenProbe
	// Starts, if set, bounds how many supervisors sharing it create log
	// files and fork/exec at the same time.
	Starts *StartGate
	// Stdin, if set, is the children's standard input, shared (typically
	// /dev/null, opened once); without it os/exec opens /dev/null for
	// every start.
	Stdin *os.File
	// Launcher, if set, starts the children instead of the supervisor's
	// own fork/exec; Exits is then unused. The supervisor still signals
	// the child's group itself.
	Launcher Launcher
}

// Launcher starts a child's process instead of the supervisor's own fork/exec (the keeper).
type Launcher interface {
	// Start starts cmd (Path, Args, Env, Dir; Stdin/Stdout/Stderr are *os.File or nil for /dev/null)
	// in a process group of its own, and calls exited exactly once when its process has ended and been reaped
	// (code -1 when killed by a signal; err when the end could not be observed; strays when it exited 0 and
	// processes it started lived on, which the launcher has killed).
	// exited must not block.
	Start(cmd *exec.Cmd, fenced bool, exited func(code int, signal string, strays bool, err error)) (pid int, err error)
}

// StartGate bounds concurrent child starts. Opening log files and fork/exec
// block their thread in the kernel, and the Go runtime gives every blocked
// thread's work to a new one: five hundred supervisors starting at once
// left the master with dozens of threads (and their stacks) for good, and
// no start went faster for it on a machine with few cores.
type StartGate struct{ slots chan struct{} }

// NewStartGate lets n starts run at once (at least 1).
func NewStartGate(n int) *StartGate { return &StartGate{slots: make(chan struct{}, max(n, 1))} }

// acquire waits for a slot and returns its release; a nil gate never waits.
func (g *StartGate) acquire() (release func()) {
	if g == nil {
		return func() {}
	}
	g.slots <- struct{}{}
	return func() { <-g.slots }
}

const (
	phaseNew = iota
	phaseRunning
	phaseDone
)

// Supervisor runs one child; create it with New and drive it with Run.
type Supervisor struct {
	spec Spec
	opts Options
	log  hclog.Logger

	stopOnce  sync.Once
	stopCh    chan struct{}   // closed by Stop: the child must end for good
	restartCh chan chan error // Restart requests, answered once the new child runs
	done      chan struct{}   // closed when Run returns

	// Only the goroutine running Run uses these.
	held      []Event            // see hold
	settle    time.Duration      // settleLimit; tests change it before Run
	launch    *exec.Cmd          // see newLaunch; a template, never started
	logs      [2]*logfile.Writer // stdout, stderr; open from the first run on
	pumps     [2]*pump           // the last run's
	pumpLimit time.Duration      // see pumpLimit; tests change it before Run
	tracker   *tracker

	mu     sync.Mutex
	phase  int
	status Status
	cur    *child
}

// child is one run of the process, the target of MarkReady.
type child struct {
	pid       int
	ready     chan struct{}
	readyOnce sync.Once
}

func (c *child) markReady() { c.readyOnce.Do(func() { close(c.ready) }) }

// New validates spec, fills in defaults and returns a supervisor that has
// not started anything yet.
func New(spec Spec, opts Options) (*Supervisor, error) {
	spec, err := spec.validate()
	if err != nil {
		return nil, err
	}
	// The caller keeps its maps and slices; supervision must not see them change.
	spec.Args = slices.Clone(spec.Args)
	spec.Env = maps.Clone(spec.Env)
	spec.Ports = maps.Clone(spec.Ports)
	spec.Vars = maps.Clone(spec.Vars)
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &Supervisor{
		spec:      spec,
		opts:      opts,
		log:       opts.Logger.With("module", spec.Module, "instance", spec.Instance),
		settle:    settleLimit,
		pumpLimit: pumpLimit,
		tracker:   newTracker(spec),
		stopCh:    make(chan struct{}),
		restartCh: make(chan chan error),
		done:      make(chan struct{}),
		status:    Status{State: StateStarting, StateSince: time.Now()},
	}, nil
}

// Status returns a snapshot of the supervisor's state.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// PID returns the pid of the running child, 0 if none.
func (s *Supervisor) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status.PID
}

// Done is closed when Run has returned.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

// MarkReady records that the child with this pid reported itself ready.
func (s *Supervisor) MarkReady(pid int) error {
	s.mu.Lock()
	c := s.cur
	s.mu.Unlock()
	if c == nil {
		return fmt.Errorf("spawner: %s: mark ready pid %d: no child running", s.spec.Instance, pid)
	}
	if c.pid != pid {
		return fmt.Errorf("spawner: %s: mark ready pid %d: current child is pid %d", s.spec.Instance, pid, c.pid)
	}
	c.markReady()
	return nil
}

// Stop ends the child gracefully and keeps it from being restarted. It
// waits until Run has returned or ctx is done. Stopping before Run makes Run
// return at once.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stopCh) })
	s.mu.Lock()
	phase := s.phase
	s.mu.Unlock()
	if phase == phaseNew {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("spawner: stop %s: %w", s.spec.Instance, ctx.Err())
	}
}

// Restart stops the child gracefully and starts it again at once, without
// counting it as a crash. It returns when the new child is running, or with
// the error that kept it from starting.
func (s *Supervisor) Restart(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case s.restartCh <- reply:
	case <-s.done:
		return ErrNotRunning
	case <-ctx.Done():
		return fmt.Errorf("spawner: restart %s: %w", s.spec.Instance, ctx.Err())
	}
	select {
	case err := <-reply:
		return err
	case <-s.done:
		select {
		case err := <-reply:
			return err
		default:
			return ErrNotRunning
		}
	case <-ctx.Done():
		return fmt.Errorf("spawner: restart %s: %w", s.spec.Instance, ctx.Err())
	}
}

// Run starts the child and supervises it until it is done for good: it
// exited with no restart due, Stop was called, it failed (exec failure,
// crash loop, never ready with no restart), or ctx was cancelled — the agent
// shutting down — in which case the child is still stopped gracefully first.
// It returns nil on a clean end and the failure otherwise. When Run returns
// the child's whole process group has been killed and the child reaped.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.phase != phaseNew {
		s.mu.Unlock()
		return fmt.Errorf("spawner: %s: Run called more than once", s.spec.Instance)
	}
	s.phase = phaseRunning
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.phase = phaseDone
		s.mu.Unlock()
		close(s.done)
	}()
	// Everything the child wrote is in its files before Done.
	defer s.closeLogs()
	defer s.flush()

	var restartReply chan error
	for !s.stopped(ctx, restartReply) {
		o := s.runOnce(ctx, restartReply)
		var done bool
		var err error
		if restartReply, done, err = s.next(ctx, o); done {
			return err
		}
	}
	return nil
}

// stopped reports whether Stop or ctx ended supervision before a run,
// answering restartReply if so. Apart from Run for the same reason as
// next.
//
//go:noinline
func (s *Supervisor) stopped(ctx context.Context, restartReply chan error) bool {
	select {
	case <-s.stopCh:
	case <-ctx.Done():
	default:
		return false
	}
	s.finishClean(restartReply)
	return true
}

// next acts on a run's outcome: it reports whether Run is done, and with
// what error, or else waits out the backoff and returns the Restart
// request that came meanwhile, if any. Apart from Run, so that its locals
// take no room on the stack of a supervisor waiting for its child (see
// runOnce).
func (s *Supervisor) next(ctx context.Context, o *outcome) (restartReply chan error, done bool, err error) {
	switch {
	case o.execErr != nil:
		s.fail(o.execErr)
		return nil, true, o.execErr
	case o.daemonized:
		// Restarting would only leave another daemon to kill.
		err := fmt.Errorf("spawner: %s: %s", s.spec.Instance, o.why)
		s.fail(err)
		return nil, true, err
	case o.restart != nil:
		return o.restart, false, nil
	case o.stopped:
		return nil, true, nil
	}
	if !s.restartDue(o.failed) {
		if o.failed {
			err := fmt.Errorf("spawner: %s: %s", s.spec.Instance, o.why)
			s.fail(err)
			return nil, true, err
		}
		return nil, true, nil
	}
	delay, ok := s.tracker.restart(time.Now(), o.uptime)
	if !ok {
		err := fmt.Errorf("spawner: %s: crash loop: more than %d restarts within %v (last: %s)",
			s.spec.Instance, s.spec.MaxRestarts, s.spec.RestartWindow, o.why)
		s.fail(err)
		return nil, true, err
	}
	s.setState(StateBackoff, func(st *Status) { st.Restarts++ })
	backoff := Event{Kind: EventBackoff, Delay: delay, Message: fmt.Sprintf("restarting in %v after %s", delay.Round(time.Millisecond), o.why)}
	if delay == 0 {
		// An immediate restart skips the timer, which would only
		// cost a trip through the scheduler, and its events wait
		// for the new child's start.
		s.hold(backoff)
		return nil, false, nil
	}
	s.emit(backoff)
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-s.stopCh:
		s.finishClean(nil)
		return nil, true, nil
	case <-ctx.Done():
		s.finishClean(nil)
		return nil, true, nil
	case restartReply = <-s.restartCh:
	}
	return restartReply, false, nil
}

func (s *Supervisor) restartDue(failed bool) bool {
	switch s.spec.Restart {
	case PolicyAlways:
		return true
	case PolicyOnFailure:
		return failed
	}
	return false
}

// finishClean ends Run with no child running and nothing failed.
func (s *Supervisor) finishClean(restartReply chan error) {
	if restartReply != nil {
		restartReply <- ErrNotRunning
	}
	s.setState(StateExited, nil)
}

func (s *Supervisor) fail(err error) {
	s.setState(StateFailed, func(st *Status) { st.LastError = err.Error() })
	s.log.Error("child failed", "error", err)
	s.emit(Event{Kind: EventFailed, Message: err.Error()})
}

// outcome is how one run of the child ended.
type outcome struct {
	execErr error      // could not start: no restart makes sense
	stopped bool       // by Stop or ctx: done for good
	restart chan error // by Restart: start again now, then answer here
	failed  bool       // a failed run for the restart policy
	// daemonized: the program forked into the background and exited (see
	// daemonized); failed for good, whatever the restart policy.
	daemonized bool
	why        string
	uptime     time.Duration
}

// runOnce starts the child once and supervises it until it has exited and
// its group has been killed. A supervisor spends its life parked in
// waitRun, so the frames down to there are kept small: the stacks of
// hundreds of supervisors are a good part of the master's memory, and the
// runtime halves a stack only while a quarter of it is enough.
func (s *Supervisor) runOnce(ctx context.Context, restartReply chan error) *outcome {
	r, err := s.startRun(restartReply)
	if err != nil {
		return &outcome{execErr: err}
	}
	s.armRun(ctx, r, restartReply)
	s.waitRun(ctx, r)
	return s.endRun(ctx, r)
}

// aRun is a started run, from its start to its end.
type aRun struct {
	p       process
	c       *child
	started time.Time
	waitCh  chan ended
	settle  bool // its events wait (see startRun)

	// Set by armRun.
	settleTimer, startTimer *time.Timer // settleTimer is nil unless settle
	probeCtx                context.Context
	cancelProbe             context.CancelFunc

	// Set by waitRun.
	ready  bool
	exited bool  // e holds how it ended
	e      ended // once exited
	o      outcome
}

// startRun starts the child; on an error, it has told restartReply.
func (s *Supervisor) startRun(restartReply chan error) (*aRun, error) {
	s.setState(StateStarting, func(st *Status) { st.PID = 0 })
	s.hold(Event{Kind: EventStarting})
	release := s.opts.Starts.acquire()
	cmd, pp, err := s.command()
	waitCh := make(chan ended, 1)
	var p process
	var ticks uint64
	if err == nil {
		before := procfs.BootTicks()
		if s.opts.Launcher != nil {
			p, err = s.startLaunched(cmd, waitCh)
		} else {
			p, err = start(cmd, s.opts.Exits, waitCh)
		}
		if after := procfs.BootTicks(); before == after {
			ticks = before
		}
		if err != nil {
			err = fmt.Errorf("spawner: %s: start %s: %w", s.spec.Instance, s.spec.Command, err)
		}
	}
	release()
	// A restart's events (the old run's exit, the backoff, the start, the
	// new run and its readiness) wait settleLimit after the start, or until
	// the new run ends first: what OnEvent does with them (the state
	// journal, watchers, the LAN manager's down report, its port check of
	// the new child and its watchers) then no longer competes with the new
	// child's exec, listen and first connections for two cores' worth of
	// CPU. Delivered at readiness instead, it met the children that were
	// slower than the median and made them slower still (bench/README.md,
	// sixth session).
	settle := err == nil && slices.ContainsFunc(s.held, func(ev Event) bool { return ev.Kind == EventExited })
	if !settle {
		s.flush()
	}
	if err != nil {
		if pp != nil {
			pp.closeAll()
		}
		if restartReply != nil {
			restartReply <- err
		}
		return nil, err
	}
	started := time.Now()
	if pp != nil {
		s.startPumps(pp, p.pid, started)
	}

	c := &child{pid: p.pid, ready: make(chan struct{})}
	s.mu.Lock()
	s.cur = c
	s.mu.Unlock()
	s.setState(StateRunning, func(st *Status) {
		st.PID = p.pid
		st.StartedAt = started
	})
	s.log.Info("child running", "pid", p.pid)
	// Stamped before the settle timer starts, so it waits the whole limit.
	s.deliver(Event{Kind: EventRunning, PID: p.pid, StartTicks: ticks}, settle)
	return &aRun{p: p, c: c, started: started, waitCh: waitCh, settle: settle}, nil
}

// armRun starts what a run's wait needs: the settle timer, the readiness
// probe and the start timeout.
func (s *Supervisor) armRun(ctx context.Context, r *aRun, restartReply chan error) {
	if r.settle {
		r.settleTimer = time.NewTimer(s.settle)
	}
	if restartReply != nil {
		restartReply <- nil
	}
	r.probeCtx, r.cancelProbe = context.WithCancel(ctx)
	switch s.spec.Readiness {
	case ReadyNone:
		r.c.markReady()
	case ReadyPorts:
		go s.probePorts(r.probeCtx, r.c)
	}
	r.startTimer = time.NewTimer(s.spec.StartTimeout)
}

// waitRun waits until the run exits, or must be stopped; it leaves the
// outcome so far in r.
func (s *Supervisor) waitRun(ctx context.Context, r *aRun) {
	var settleC <-chan time.Time // nil once the restart's events are out
	if r.settleTimer != nil {
		settleC = r.settleTimer.C
	}
	readyC, timeoutC := r.c.ready, r.startTimer.C
	for {
		select {
		case <-settleC:
			settleC = nil
			s.flush()
		case <-readyC:
			readyC, timeoutC = nil, nil
			r.ready = true
			r.cancelProbe()
			s.readied(r.p.pid, settleC != nil)
		case <-timeoutC:
			r.o.failed = true
			r.o.why = s.notReadyWhy()
			return
		case r.e = <-r.waitCh:
			r.exited = true
			if !r.ready {
				// A child that reported ready and then exited at once was
				// ready, whichever channel select happened to pick.
				select {
				case <-readyC:
					r.ready = true
					s.readied(r.p.pid, false)
				default:
				}
			}
			return
		case <-s.stopCh:
			r.o.stopped = true
			r.o.why = "stop requested"
			return
		case <-ctx.Done():
			r.o.stopped = true
			r.o.why = "agent shutting down"
			return
		case r.o.restart = <-s.restartCh:
			r.o.why = "restart requested"
			return
		}
	}
}

// notReadyWhy is apart from waitRun for the same reason as readied.
//
//go:noinline
func (s *Supervisor) notReadyWhy() string {
	return fmt.Sprintf("not ready within %v", s.spec.StartTimeout)
}

// endRun stops what armRun started and the child, unless it exited, and
// kills its group.
func (s *Supervisor) endRun(ctx context.Context, r *aRun) *outcome {
	if r.settleTimer != nil {
		r.settleTimer.Stop()
	}
	r.startTimer.Stop()
	r.cancelProbe()
	if !r.exited {
		r.e = s.stopChild(ctx, r.p, r.waitCh, r.o.why)
	}
	r.o = s.exited(r.p, r.e, r.started, r.ready, r.o)
	return &r.o
}

// readied records that the run is ready. Not inlined: its event would
// take room on waitRun's stack frame.
//
//go:noinline
func (s *Supervisor) readied(pid int, settling bool) {
	s.setState(StateReady, nil)
	s.deliver(Event{Kind: EventReady, PID: pid}, settling)
}

// startLaunched starts cmd through the Launcher, which reports the end into
// waitCh (cap 1, sent to once).
func (s *Supervisor) startLaunched(cmd *exec.Cmd, waitCh chan ended) (process, error) {
	pid, err := s.opts.Launcher.Start(cmd, s.spec.Fenced, func(code int, signal string, strays bool, err error) {
		select {
		case waitCh <- ended{code: code, signal: signal, err: err, strays: strays}:
		default:
		}
	})
	if err != nil {
		return process{}, err
	}
	return launched(pid), nil
}

// stopChild ends a running child: Shutdown hook or SIGTERM to the group,
// then SIGKILL to the group after StopTimeout. It returns Wait's result.
func (s *Supervisor) stopChild(ctx context.Context, p process, waitCh <-chan ended, why string) ended {
	s.setState(StateStopping, nil)
	s.log.Info("stopping child", "pid", p.pid, "reason", why)
	s.emit(Event{Kind: EventStopping, PID: p.pid, Message: why})
	// ctx may be the agent's life that just ended; the stop still has to run
	// its course, bounded by StopTimeout alone.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.spec.StopTimeout)
	defer cancel()
	var hookErr chan error
	if s.opts.Shutdown != nil {
		hookErr = make(chan error, 1)
		go func() { hookErr <- s.opts.Shutdown(stopCtx, p.pid, s.spec.StopTimeout) }()
	} else {
		s.terminate(p)
	}
	for {
		select {
		case e := <-waitCh:
			return e
		case err := <-hookErr:
			hookErr = nil
			switch {
			case errors.Is(err, errors.ErrUnsupported):
				// The child serves no graceful stop of its own: expected.
				s.log.Debug("no shutdown hook for this child, signalling", "pid", p.pid)
				s.terminate(p)
			case err != nil:
				s.log.Warn("shutdown hook failed, signalling", "pid", p.pid, "error", err)
				s.terminate(p)
			}
		case <-stopCtx.Done():
			s.log.Warn("child did not stop in time, killing its group", "pid", p.pid, "timeout", s.spec.StopTimeout)
			if err := killGroup(p); err != nil {
				s.log.Error("cannot kill process group", "pid", p.pid, "error", err)
			}
			// SIGKILL cannot be ignored, so this wait ends unless the kernel
			// holds the process in an uninterruptible sleep.
			return <-waitCh
		}
	}
}

func (s *Supervisor) terminate(p process) {
	if err := terminate(p); err != nil {
		s.log.Warn("cannot terminate process group", "pid", p.pid, "error", err)
	}
}

// exited records the end of a run whose main process has been reaped, and
// kills what is left of its group so no grandchild is orphaned.
func (s *Supervisor) exited(p process, e ended, started time.Time, ready bool, o outcome) outcome {
	if s.opts.Launcher == nil && e.clean() {
		// The launcher looks before it kills the group; here the group
		// is still as the main process left it.
		if alive, err := groupAlive(p.pid); err == nil && alive {
			e.strays = true
		}
	}
	if err := killGroup(p); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.Warn("cannot kill process group", "pid", p.pid, "error", err)
	}
	s.awaitGroupDeath(p.pid)
	s.finishPumps()
	o.uptime = time.Since(started)
	code, sig, how := e.code, e.signal, e.how()
	if !o.stopped && o.restart == nil && o.why == "" {
		o.why = how
		switch {
		case daemonized(e, o.uptime, s.spec.StartTimeout):
			o.failed, o.daemonized = true, true
			o.why = daemonizedWhy
		case !ready:
			o.failed = true
			o.why = "exited before ready (" + how + ")"
		case code != 0 || sig != "":
			o.failed = true
		}
	}
	s.mu.Lock()
	s.cur = nil
	s.mu.Unlock()
	s.setState(StateExited, func(st *Status) {
		st.PID = 0
		st.ExitCode = code
		st.Signal = sig
		if o.failed {
			st.LastError = o.why
		}
	})
	s.log.Info("child exited", "pid", p.pid, "code", code, "signal", sig, "reason", o.why)
	s.hold(Event{Kind: EventExited, PID: p.pid, ExitCode: code, Signal: sig, Message: o.why})
	return o
}

// daemonizedWhy is the failure of a program that daemonized.
const daemonizedWhy = "the program daemonized; run it in the foreground"

// daemonized reports whether a run that ended as e after uptime was a
// program forking into the background (redis-server --daemonize yes): its
// main process exited 0 while processes it started lived on, within
// startTimeout of its start. Later, the same end is a program that ran
// its course and left a helper behind, as under systemd's Type=simple.
func daemonized(e ended, uptime, startTimeout time.Duration) bool {
	return e.clean() && e.strays && uptime < startTimeout
}

// groupDeathLimit bounds the wait for a SIGKILLed group to die; only a
// process stuck in the kernel takes longer.
const groupDeathLimit = 5 * time.Second

// awaitGroupDeath waits until the SIGKILLed group has died, so that when Run
// returns the agent may hand the child's ports to someone else.
func (s *Supervisor) awaitGroupDeath(pgid int) {
	deadline := time.Now().Add(groupDeathLimit)
	for {
		alive, err := groupAlive(pgid)
		if err != nil {
			s.log.Warn("cannot check process group", "pgid", pgid, "error", err)
			return
		}
		if !alive {
			return
		}
		if time.Now().After(deadline) {
			s.log.Warn("process group still alive after SIGKILL", "pgid", pgid, "waited", groupDeathLimit)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// loopback is where readiness probes connect.
var loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// probePorts marks c ready once every assigned port accepts a connection.
func (s *Supervisor) probePorts(ctx context.Context, c *child) {
	ports := slices.Sorted(maps.Values(s.spec.Ports))
	// Most children listen within milliseconds of exec: probe soon, then
	// back off so a slow starter costs little.
	const minProbe, maxProbe = time.Millisecond, 25 * time.Millisecond
	delay := minProbe
	timer := time.NewTimer(delay)
	defer timer.Stop()
	lp := s.opts.Listen
	for len(ports) > 0 {
		ok := false
		if lp != nil {
			var err error
			if ok, err = lp.Listening(ports[0]); err != nil {
				s.log.Debug("listen probe failed; connecting instead", "error", err)
				lp = nil
			}
		}
		if lp == nil {
			ok = tcpcheck.Reach(ctx, loopback, ports[0], 250*time.Millisecond) == nil
		}
		if ok {
			ports = ports[1:]
			continue
		}
		timer.Reset(delay)
		delay = min(2*delay, maxProbe)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
	}
	c.markReady()
}

// vars returns the ALLEX_* variables given to the child, which are also the
// names available to ${...} templating.
func (s *Supervisor) vars() map[string]string {
	v := map[string]string{
		"ALLEX_MODULE":   s.spec.Module,
		"ALLEX_INSTANCE": s.spec.Instance,
	}
	for proto, port := range s.spec.Ports {
		name, _ := portVar(proto)
		v[name] = strconv.Itoa(int(port))
	}
	ports := s.spec.Ports
	if ports == nil {
		ports = map[string]uint16{}
	}
	js, _ := json.Marshal(ports) // a map[string]uint16 always marshals
	v["ALLEX_PORTS"] = string(js)
	maps.Copy(v, s.spec.Vars)
	return v
}

// command builds the exec.Cmd of one run and, with a log dir, the pipes
// of its stdout and stderr (opening the log files on the first run).
func (s *Supervisor) command() (*exec.Cmd, *pipes, error) {
	if s.launch == nil {
		l, err := s.newLaunch()
		if err != nil {
			return nil, nil, err
		}
		s.launch = l
	}
	cmd := &exec.Cmd{Path: s.launch.Path, Args: s.launch.Args, Env: s.launch.Env, Dir: s.launch.Dir}
	if cmd.Dir != "" {
		// exec reports a missing dir as a missing program; say what is wrong.
		fi, err := os.Stat(cmd.Dir)
		if err == nil && !fi.IsDir() {
			err = fmt.Errorf("%s is not a directory", cmd.Dir)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("spawner: %s: working dir: %w", s.spec.Instance, err)
		}
	}
	cmd.SysProcAttr = sysProcAttr()
	if s.opts.Stdin != nil {
		cmd.Stdin = s.opts.Stdin
	}
	if s.spec.LogDir == "" {
		return cmd, nil, nil
	}
	if err := s.openLogs(); err != nil {
		return nil, nil, err
	}
	pp, err := openPipes()
	if err != nil {
		return nil, nil, fmt.Errorf("spawner: %s: output pipes: %w", s.spec.Instance, err)
	}
	cmd.Stdout, cmd.Stderr = pp.w[0], pp.w[1]
	return cmd, pp, nil
}

// newLaunch resolves the program and expands its arguments, working dir
// and environment. They are the same for every run, so a restart reuses
// them rather than search PATH and rebuild the environment again.
func (s *Supervisor) newLaunch() (*exec.Cmd, error) {
	vars := s.vars()
	args := make([]string, len(s.spec.Args))
	for i, a := range s.spec.Args {
		args[i] = Expand(a, vars)
	}
	cmd := exec.Command(s.spec.Command, args...)
	if cmd.Err != nil {
		return nil, fmt.Errorf("spawner: %s: command %q: %w", s.spec.Instance, s.spec.Command, cmd.Err)
	}
	cmd.Dir = Expand(s.spec.Dir, vars)
	env := os.Environ()
	for _, k := range slices.Sorted(maps.Keys(s.spec.Env)) {
		env = append(env, k+"="+Expand(s.spec.Env[k], vars))
	}
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
	}
	cmd.Env = dedupEnv(env)
	return cmd, nil
}

// dedupEnv keeps the last of the entries that set the same variable, as
// os/exec does at every start (a C program's getenv would find the first):
// the spec's variables and the ALLEX_* ones override the master's own.
// Done once here, starts skip os/exec's map of the environment.
func dedupEnv(env []string) []string {
	seen := make(map[string]bool, len(env))
	out := make([]string, 0, len(env))
	for i := len(env) - 1; i >= 0; i-- {
		k, _, _ := strings.Cut(env[i], "=")
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, env[i])
	}
	slices.Reverse(out)
	return out
}

// LogPath is where a child's stream ("stdout" or "stderr") is logged under
// logDir: <logDir>/<stream>/<instance>.log, rotated to <instance>.log.1
// and on. One directory per stream because creating a file holds its
// directory's lock: a burst of starts then creates the two streams' files
// side by side rather than in turn (twice the rate on a 2-core ext4 VM,
// where a create can take 0.5 ms).
func LogPath(logDir, instance, stream string) string {
	return filepath.Join(logDir, stream, instance+".log")
}

func (s *Supervisor) setState(st State, mutate func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.State = st
	s.status.StateSince = time.Now()
	if mutate != nil {
		mutate(&s.status)
	}
}

// emit is only called from the goroutine running Run, which is what keeps
// OnEvent calls ordered and never concurrent. Held events go out first.
func (s *Supervisor) emit(ev Event) {
	s.flush()
	if s.opts.OnEvent == nil {
		return
	}
	s.opts.OnEvent(s.stamp(ev))
}

// settleLimit is how long a restart's events wait after the new child's
// start: long enough for a typical child to be listening (bench/README.md
// has the kill timings behind it), short enough not to delay the report.
const settleLimit = 5 * time.Millisecond

// hold queues an event, stamped now, for the next emit or flush. A restart
// holds the old run's exit and the new run's start until settleLimit after
// the start (see runOnce): OnEvent's work no longer runs before its fork,
// where it was a quarter of the master's part of a kill -9 → restart, nor
// beside its exec and first connections.
func (s *Supervisor) hold(ev Event) {
	if s.opts.OnEvent == nil {
		return
	}
	s.held = append(s.held, s.stamp(ev))
}

// deliver emits ev, or holds it with a restart's other events while they
// settle (see runOnce).
func (s *Supervisor) deliver(ev Event, settling bool) {
	if settling {
		s.hold(ev)
		return
	}
	s.emit(ev)
}

// flush emits the held events in order.
func (s *Supervisor) flush() {
	for i, ev := range s.held {
		s.opts.OnEvent(ev)
		s.held[i] = Event{}
	}
	s.held = s.held[:0]
}

func (s *Supervisor) stamp(ev Event) Event {
	ev.Time = time.Now()
	ev.Instance = s.spec.Instance
	ev.Module = s.spec.Module
	s.mu.Lock()
	ev.Restarts = s.status.Restarts
	s.mu.Unlock()
	return ev
}
