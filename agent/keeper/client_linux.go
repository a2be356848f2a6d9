package keeper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ErrKeeperDied is the error a child's exited callback gets when its
// keeper died under it; the client has SIGKILLed the child's group.
var ErrKeeperDied = errors.New("keeper: the keeper process died")

// ErrNotRunning wraps what Start returns while there is no keeper: the
// last one died and a new one is not ready, or could not be started.
var ErrNotRunning = errors.New("keeper: not running")

// errClosed is what Start returns, and late exits report, after Close.
var errClosed = errors.New("keeper: client closed")

// Bounds.
const (
	readyLimit   = 10 * time.Second // a new keeper says Ready
	replyLimit   = 30 * time.Second // a request is sent and answered
	exitLimit    = 5 * time.Second  // a keeper that closed its socket, or was SIGKILLed, is reaped
	closeLimit   = 5 * time.Second  // after Bye, past the exit fence
	respawnFirst = 100 * time.Millisecond
	respawnMax   = 5 * time.Second
	respawnTries = 10
)

// Options configure Start.
type Options struct {
	StateDir string
	// Command runs the keeper; default {os.Executable(), "keeper"}.
	// "-state-dir StateDir" is appended.
	Command []string
	// ExitFence is how long children get between SIGTERM and SIGKILL
	// once the master is gone; default DefaultExitFence.
	ExitFence time.Duration
	Logger    hclog.Logger
}

// Client is the master's side of its keeper, and a spawner.Launcher. If
// the keeper dies it kills the groups of the children it started and
// starts a new keeper; starts fail meanwhile.
type Client struct {
	opts     Options
	log      hclog.Logger
	token    string          // this client, in keeper.owner
	ctx      context.Context // ended by Close
	cancel   context.CancelFunc
	respawns sync.WaitGroup

	mu       sync.Mutex
	cur      *conn // nil while there is no keeper
	down     error // why cur is nil
	closed   bool
	lease    time.Duration
	hasLease bool
	fence    time.Duration
}

// Start stops a keeper an earlier master left on StateDir, then starts
// a new keeper and waits until it is ready.
func Start(ctx context.Context, opts Options) (*Client, error) {
	if opts.StateDir == "" {
		return nil, errors.New("keeper: no state dir")
	}
	if len(opts.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("keeper: %w", err)
		}
		opts.Command = []string{exe, "keeper"}
	}
	if opts.ExitFence <= 0 {
		opts.ExitFence = DefaultExitFence
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(opts.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("keeper: %w", err)
	}
	c := &Client{opts: opts, log: opts.Logger.Named("keeper"), token: newToken(), fence: opts.ExitFence}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	lock, err := lockStateDir(ctx, opts.StateDir, c.token, opts.ExitFence, true, c.log)
	if err != nil {
		c.cancel()
		return nil, err
	}
	k, err := c.spawn(ctx, lock)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.publish(k)
	return c, nil
}

// Start starts cmd through the keeper; see spawner.Launcher. cmd.SysProcAttr
// is not used: the keeper always starts a process group with Pdeathsig.
// exited is called from the client's reader and must not block.
func (c *Client) Start(cmd *exec.Cmd, fenced bool, exited func(code int, signal string, strays bool, err error)) (int, error) {
	c.mu.Lock()
	k, down := c.cur, c.down
	c.mu.Unlock()
	if k == nil {
		return 0, down
	}
	return k.start(cmd, fenced, exited)
}

// SetLease sets the boot-time instant (see package boottime) at which the
// keeper kills the fenced children and refuses new ones. It does not wait
// for the keeper, yet a Start made after it is checked against it.
func (c *Client) SetLease(until time.Duration) {
	c.mu.Lock()
	c.lease, c.hasLease = until, true
	k := c.cur
	if k != nil {
		k.queueLease(until)
	}
	c.mu.Unlock()
	if k != nil {
		k.flushSoon()
	}
}

// SetExitFence sets how long children get between SIGTERM and SIGKILL
// once the master is gone.
func (c *Client) SetExitFence(d time.Duration) {
	c.mu.Lock()
	c.fence = d
	k := c.cur
	if k != nil {
		k.queueFence(d)
	}
	c.mu.Unlock()
	if k != nil {
		k.flushSoon()
	}
}

// Close stops the keeper cleanly: the master has stopped its children,
// the keeper kills whatever is left and exits, and Close waits for that.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	k, fence := c.cur, c.fence
	c.cur, c.down = nil, errClosed
	c.mu.Unlock()
	c.cancel()
	c.respawns.Wait()
	if k == nil {
		return nil
	}
	return k.close(fence + closeLimit)
}

// publish makes k the keeper of later starts, with the current settings
// queued ahead of them; after Close it stops k instead.
func (c *Client) publish(k *conn) {
	c.mu.Lock()
	if c.closed {
		fence := c.fence
		c.mu.Unlock()
		_ = k.close(fence + closeLimit)
		return
	}
	select {
	case <-k.dead:
		// Died before it was published: lost found it not current.
		c.replaceLocked(k)
		c.mu.Unlock()
		return
	default:
	}
	c.cur, c.down = k, nil
	k.queueFence(c.fence)
	if c.hasLease {
		k.queueLease(c.lease)
	}
	c.mu.Unlock()
	k.flushSoon()
}

// keeperEnv is the master's environment for the keeper, with allocation
// profiling off from the keeper's first allocation: Main comes after the
// package initializers of the whole binary, whose sampled allocations
// would otherwise keep a profile nothing reads. A memprofilerate the
// user's GODEBUG sets comes later and wins. The children's environment
// comes with each start, not from the keeper's.
func keeperEnv(env []string) []string {
	debug := "memprofilerate=0"
	out := make([]string, 0, len(env)+1)
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "GODEBUG="); ok {
			if v != "" {
				debug += "," + v
			}
			continue
		}
		out = append(out, e)
	}
	return append(out, "GODEBUG="+debug)
}

// spawn starts a keeper that inherits lock (and closes the client's copy)
// and waits until it is ready.
func (c *Client) spawn(ctx context.Context, lock *os.File) (*conn, error) {
	defer lock.Close()
	mine, theirs, err := socketPair()
	if err != nil {
		return nil, err
	}
	args := append(append([]string(nil), c.opts.Command[1:]...), "-state-dir", c.opts.StateDir)
	cmd := exec.Command(c.opts.Command[0], args...)
	cmd.ExtraFiles = []*os.File{theirs, lock} // fds 3 and 4
	cmd.Stderr = os.Stderr
	cmd.Env = keeperEnv(os.Environ())
	// Away from the master's group: a ^C for the master is not for it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	_ = theirs.Close()
	if err != nil {
		_ = mine.Close()
		return nil, fmt.Errorf("keeper: start %s: %w", c.opts.Command[0], err)
	}
	k, err := newConn(c, cmd, mine)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	timer := time.NewTimer(readyLimit)
	defer timer.Stop()
	select {
	case <-k.ready:
		c.log.Debug("keeper ready", "pid", k.pid)
		return k, nil
	case <-k.dead:
		err = fmt.Errorf("keeper: pid %d exited before it was ready (%v)", k.pid, k.exitState())
	case <-timer.C:
		err = fmt.Errorf("keeper: pid %d not ready within %v", k.pid, readyLimit)
	case <-ctx.Done():
		err = fmt.Errorf("keeper: start: %w", ctx.Err())
	}
	k.mu.Lock()
	k.bye = true // not a death to recover from
	k.mu.Unlock()
	_ = cmd.Process.Kill()
	<-k.dead // bounded: the reader waits exitLimit for the reap
	return nil, err
}

// lost is called once k has ended: unless closing, the client starts a
// new keeper in the background.
func (c *Client) lost(k *conn, children int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != k || c.closed {
		return
	}
	c.log.Error("keeper died; its children's groups are killed; starting a new keeper", "pid", k.pid, "state", k.exitState(), "children", children)
	c.replaceLocked(k)
}

// replaceLocked starts replacing the dead keeper k; c.mu is held.
func (c *Client) replaceLocked(k *conn) {
	c.cur = nil
	c.down = fmt.Errorf("%w: keeper pid %d died (%v); starting a new one", ErrNotRunning, k.pid, k.exitState())
	c.respawns.Add(1)
	go c.respawn()
}

// respawn starts a new keeper, with bounded retries and backoff. It does
// not stop a keeper found on the state dir: that is another master's.
func (c *Client) respawn() {
	defer c.respawns.Done()
	delay := respawnFirst
	for try := 1; ; try++ {
		k, err := c.respawnOnce()
		if err == nil {
			c.log.Info("new keeper started", "pid", k.pid)
			c.publish(k)
			return
		}
		if c.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errTakenOver) {
			c.mu.Lock()
			c.down = fmt.Errorf("%w: %w", ErrNotRunning, err)
			c.mu.Unlock()
			c.log.Error("not starting a new keeper", "error", err)
			return
		}
		if try == respawnTries {
			c.mu.Lock()
			c.down = fmt.Errorf("%w: gave up starting a new keeper after %d tries: %w", ErrNotRunning, try, err)
			c.mu.Unlock()
			c.log.Error("gave up starting a new keeper", "tries", try, "error", err)
			return
		}
		c.log.Warn("cannot start a new keeper; retrying", "in", delay, "error", err)
		select {
		case <-time.After(delay):
		case <-c.ctx.Done():
			return
		}
		delay = min(2*delay, respawnMax)
	}
}

func (c *Client) respawnOnce() (*conn, error) {
	c.mu.Lock()
	fence := c.fence
	c.mu.Unlock()
	lock, err := lockStateDir(c.ctx, c.opts.StateDir, c.token, fence, false, c.log)
	if err != nil {
		return nil, err
	}
	return c.spawn(c.ctx, lock)
}

// keeperPID returns the pid of the current keeper, 0 if none (tests).
func (c *Client) keeperPID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return 0
	}
	return c.cur.pid
}
