package needs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allex-go/allex/agent/lanlink"
	"github.com/allex-go/allex/lanwire"
)

// Agent is what the controller uses of the agent: its public methods.
type Agent interface {
	// StartNeed starts the child of a copy; its events come back through
	// Controller.Child.
	StartNeed(n lanwire.Need) (lanwire.Ports, error)
	// StopNeed stops a copy's child without waiting; its end comes back
	// as a ChildEnded event.
	StopNeed(instance string)
	Capacity() lanwire.Capacity
	Busy(instance string) bool
}

// Link sends frames to the LAN manager.
type Link interface {
	Send(typ string, payload any) error
}

// Keeper enforces the lease when the master cannot (lanwire/fencing.go).
type Keeper interface {
	SetLease(until time.Duration)
	SetExitFence(d time.Duration)
}

// Controller runs a State on a goroutine of its own: the link's and the
// agent's events are queued and applied in order, and the effects are
// carried out by calling the agent, the link and the keeper. It implements
// lanlink.Handler.
type Controller struct {
	st     *State
	agent  Agent
	keeper Keeper
	link   Link
	clock  func() time.Duration

	// flushed are closed after the loop's next effects are carried out;
	// only the loop uses it.
	flushed []chan struct{}

	mu    sync.Mutex
	queue []func(now time.Duration)
	wake  chan struct{}
	done  chan struct{}
	holds atomic.Bool
}

// NewController returns a controller; set its link with SetLink before Run.
// keeper may be nil (no keeper on this OS); clock is the boot-time clock.
func NewController(cfg Config, agent Agent, keeper Keeper, clock func() time.Duration) *Controller {
	cfg.Capacity, cfg.Busy = agent.Capacity, agent.Busy
	return &Controller{st: NewState(cfg), agent: agent, keeper: keeper, clock: clock, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// SetLink sets the link frames go out on.
func (c *Controller) SetLink(l Link) { c.link = l }

func (c *Controller) post(fn func(now time.Duration)) {
	c.mu.Lock()
	c.queue = append(c.queue, fn)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run applies events until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	defer close(c.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c.mu.Lock()
		q := c.queue
		c.queue = nil
		c.mu.Unlock()
		now := c.clock()
		for _, fn := range q {
			fn(now)
		}
		if next, ok := c.st.Next(); ok && now >= next {
			c.st.Tick(now)
		}
		c.carryOut()
		c.holds.Store(c.st.HoldsCopies())
		for _, f := range c.flushed {
			close(f)
		}
		c.flushed = c.flushed[:0]
		wait := time.Hour
		if next, ok := c.st.Next(); ok {
			wait = max(next-c.clock(), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// carryOut does the state's effects; starting a child can add more.
func (c *Controller) carryOut() {
	for fx := c.st.Take(); len(fx) > 0; fx = c.st.Take() {
		for _, e := range fx {
			c.do(e)
		}
	}
}

func (c *Controller) do(e Effect) {
	switch e.Kind {
	case DoSend:
		if c.link == nil {
			return
		}
		// Frames sent with no session are dropped: the next hello carries
		// the state.
		if err := c.link.Send(e.Type, e.Payload); err != nil && !errors.Is(err, lanlink.ErrNotConnected) {
			c.st.log.Warn("LAN link: cannot send", "type", e.Type, "error", err)
		}
	case DoStart:
		ports, err := c.agent.StartNeed(e.Need)
		if err != nil {
			c.st.log.Warn("cannot start granted need", "instance", e.Need.Instance, "error", err)
			c.st.StartFailed(e.Need.Instance, e.Epoch, err)
			return
		}
		c.st.log.Info("starting granted need", "instance", e.Need.Instance, "module", e.Need.Module, "epoch", e.Epoch)
		c.st.Started(e.Need.Instance, e.Epoch, ports)
	case DoStop:
		c.agent.StopNeed(e.Instance)
	case DoLease:
		if c.keeper != nil {
			c.keeper.SetLease(e.Until)
		}
	case DoExitFence:
		if c.keeper != nil {
			c.keeper.SetExitFence(e.Duration)
		}
	}
}

// Child is fed the events of copies' children by the agent.
func (c *Controller) Child(ev ChildEvent) {
	c.post(func(now time.Duration) { c.st.Child(now, ev) })
}

// Hello implements lanlink.Handler.
func (c *Controller) Hello() lanwire.Hello {
	reply := make(chan lanwire.Hello, 1)
	c.post(func(time.Duration) { reply <- c.st.Hello() })
	select {
	case h := <-reply:
		return h
	case <-c.done:
		return lanwire.Hello{}
	}
}

// Welcomed implements lanlink.Handler.
func (c *Controller) Welcomed(w *lanwire.Welcome, helloSent time.Duration) {
	c.post(func(now time.Duration) { c.st.Welcomed(now, w, helloSent) })
}

// Renewed implements lanlink.Handler.
func (c *Controller) Renewed(sent time.Duration) {
	c.post(func(time.Duration) { c.st.Renewed(sent) })
}

// HandleFrame implements lanlink.Handler.
func (c *Controller) HandleFrame(typ string, payload any) {
	c.post(func(now time.Duration) { c.st.Frame(now, typ, payload) })
}

// Flush returns once every event posted before it has been applied and
// its effects carried out (frames queued on the link).
func (c *Controller) Flush() {
	done := make(chan struct{})
	c.post(func(time.Duration) { c.flushed = append(c.flushed, done) })
	select {
	case <-done:
	case <-c.done:
	}
}

// Drain stops claiming and taking grants, and returns once that holds:
// the master is shutting down.
func (c *Controller) Drain() {
	c.post(func(time.Duration) { c.st.Drain() })
	c.Flush()
}

// LinkState implements lanlink.Handler: claims and offers end with the
// session.
func (c *Controller) LinkState(state string, err error) {
	if state != lanlink.StateConnected {
		c.post(func(time.Duration) { c.st.Disconnected() })
	}
	if err != nil {
		c.st.log.Info("LAN link", "state", state, "error", err)
	}
}

// HoldsCopies implements lanlink.Handler: whether a copy may still run.
func (c *Controller) HoldsCopies() bool { return c.holds.Load() }
