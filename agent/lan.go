package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/allex-go/allex/agent/config"
	"github.com/allex-go/allex/agent/lanlink"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/lanwire"
)

// claimTimeout forgets a claim the LAN manager never answered, so the need
// can be claimed again.
const claimTimeout = 10 * time.Second

// lanState turns LAN needs into children: it claims the needs this master
// can run, starts the granted ones, reports them spawned once ready and
// down when they end. It implements lanlink.Handler.
type lanState struct {
	a *Agent

	mu        sync.Mutex
	link      *lanlink.Link
	linkState string
	offered   []lanwire.Need
	claims    map[string]time.Time
	// What reportCapacity last sent (or the last hello carried), when,
	// and its pending catch-up report.
	capLast  lanwire.Capacity
	capKnown bool
	capSent  time.Time
	capTimer *time.Timer
}

// capacityEvery is how often, at most, reportCapacity sends a capacity
// that does not change whether the machine is full.
const capacityEvery = 100 * time.Millisecond

func newLANState(a *Agent) *lanState {
	return &lanState{a: a, linkState: "disabled", claims: map[string]time.Time{}}
}

func (l *lanState) run(ctx context.Context) error {
	cfg := l.a.opts.Config
	link, err := lanlink.New(lanlink.Config{
		Address: cfg.LanManagerAddress,
		Port:    cfg.LanManagerPort,
		Token:   l.a.opts.Token,
		Handler: l,
		Logger:  l.a.log.Named("lanlink"),
	})
	if err != nil {
		return fmt.Errorf("LAN link: %w", err)
	}
	l.mu.Lock()
	l.link = link
	l.mu.Unlock()
	return link.Run(ctx)
}

func (l *lanState) state() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.linkState
}

// send queues a frame; while disconnected the next hello reconciles.
func (l *lanState) send(typ string, payload any) error {
	l.mu.Lock()
	link := l.link
	l.mu.Unlock()
	if link == nil {
		return lanlink.ErrNotConnected
	}
	err := link.Send(typ, payload)
	if err != nil && !errors.Is(err, lanlink.ErrNotConnected) {
		l.a.log.Warn("LAN link: cannot send", "type", typ, "error", err)
	}
	return err
}

// LinkState implements lanlink.Handler.
func (l *lanState) LinkState(state string, err error) {
	l.mu.Lock()
	l.linkState = state
	if state != lanlink.StateConnected {
		// Claims and offers belong to the session that ended.
		l.claims = map[string]time.Time{}
		l.offered = nil
	}
	l.mu.Unlock()
	if err != nil {
		l.a.log.Info("LAN link", "state", state, "error", err)
	} else {
		l.a.log.Info("LAN link", "state", state)
	}
}

// Hello implements lanlink.Handler.
func (l *lanState) Hello() lanwire.Hello {
	a := l.a
	cfg := a.opts.Config
	h := lanwire.Hello{
		MachineID: cfg.MachineID,
		Address:   cfg.Address,
		Version:   a.opts.Version,
		Capacity:  a.capacity(),
	}
	l.noteHelloCapacity(h.Capacity)
	for m := range cfg.Modules {
		h.Modules = append(h.Modules, m)
	}
	sort.Strings(h.Modules)
	var restarting []string
	defer func() {
		// A need child between two runs cannot be reported running, so
		// the LAN manager of the new session may give its need to another
		// master: give it up rather than risk a duplicate.
		for _, inst := range restarting {
			l.a.log.Info("LAN link reconnected while a need child was restarting; stopping it", "instance", inst)
			l.stopNeedChild(inst)
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.procs {
		if p.needID == "" || isDone(p) || p.suppressDown {
			continue
		}
		pid := p.sup.PID()
		if pid <= 0 {
			restarting = append(restarting, p.spec.GetInstance())
			continue
		}
		rs := lanwire.RunningService{Instance: p.needID, Module: p.spec.GetModule(), PID: pid, Ports: lanwire.Ports(p.ports)}
		if st := p.sup.Status(); !st.StartedAt.IsZero() {
			rs.StartedAt = st.StartedAt
		}
		h.Running = append(h.Running, rs)
	}
	sort.Slice(h.Running, func(i, j int) bool { return h.Running[i].Instance < h.Running[j].Instance })
	return h
}

func (a *Agent) capacity() lanwire.Capacity {
	c := lanwire.Capacity{MaxProcesses: a.opts.Config.MaxProcesses, FreePorts: map[string]int{}}
	// A count kept by Start and supervise rather than a walk of procs:
	// every start and exit asks, so a walk made a start of N children
	// cost O(N²).
	a.mu.Lock()
	c.Running = a.live
	a.mu.Unlock()
	for _, u := range a.ports.Usage() {
		c.FreePorts[u.Protocol] = u.Free()
	}
	return c
}

// HandleFrame implements lanlink.Handler.
func (l *lanState) HandleFrame(typ string, payload any) {
	switch f := payload.(type) {
	case *lanwire.Welcome:
		l.a.log.Info("LAN manager welcomed this master", "session", f.SessionID)
	case *lanwire.Needs:
		l.mu.Lock()
		l.offered = f.Needs
		l.mu.Unlock()
		l.claimOffered()
	case *lanwire.Grant:
		l.grant(f.Need)
	case *lanwire.Deny:
		l.mu.Lock()
		delete(l.claims, f.Instance)
		l.mu.Unlock()
		l.a.log.Debug("claim denied", "instance", f.Instance, "reason", f.Reason)
	case *lanwire.Approved:
		l.a.log.Info("service published", "instance", f.Service.Instance, "ports", f.Service.Ports)
	case *lanwire.Rejected:
		l.a.log.Warn("LAN manager rejected the service; stopping it", "instance", f.Instance, "reason", f.Reason)
		l.stopNeedChild(f.Instance)
	case *lanwire.Stop:
		l.a.log.Info("LAN manager asked to stop a service", "instance", f.Instance, "reason", f.Reason)
		l.stopNeedChild(f.Instance)
	case *lanwire.Error:
		l.a.log.Warn("LAN manager refused a frame", "ref", f.Ref, "message", f.Message)
	default:
		l.a.log.Warn("unexpected frame from the LAN manager", "type", typ)
	}
}

// claimOffered bids for offered needs while there is capacity left.
func (l *lanState) claimOffered() {
	a := l.a
	if a.shuttingDown() {
		return
	}
	cfg := a.opts.Config
	capa := a.capacity()
	now := time.Now()
	var claims []string
	l.mu.Lock()
	for inst, at := range l.claims {
		if now.Sub(at) > claimTimeout {
			delete(l.claims, inst)
		}
	}
	pending := len(l.claims)
	for _, n := range l.offered {
		if cfg.MaxProcesses > 0 && capa.Running+pending >= cfg.MaxProcesses {
			break
		}
		if _, ok := cfg.Modules[n.Module]; !ok {
			continue
		}
		if _, ok := l.claims[n.Instance]; ok {
			continue
		}
		a.mu.Lock()
		p, running := a.procs[n.Instance]
		busy := running && !isDone(p)
		a.mu.Unlock()
		if busy {
			continue
		}
		l.claims[n.Instance] = now
		pending++
		claims = append(claims, n.Instance)
	}
	l.mu.Unlock()
	for _, inst := range claims {
		if err := l.send(lanwire.TypeClaim, &lanwire.Claim{Instance: inst}); err != nil {
			// Unsent: leave it claimable for the next offer.
			l.mu.Lock()
			delete(l.claims, inst)
			l.mu.Unlock()
		}
	}
}

// grant starts the child of a need this master won.
func (l *lanState) grant(n lanwire.Need) {
	l.mu.Lock()
	delete(l.claims, n.Instance)
	l.mu.Unlock()
	a := l.a
	m, ok := a.opts.Config.Modules[n.Module]
	if !ok {
		l.send(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: n.Instance, Error: fmt.Sprintf("module %q is not configured on this master", n.Module)})
		return
	}
	spec := m.Spec(n.Module, n.Instance, n.Properties)
	spec.Protocols = nil
	for _, name := range n.Protocols {
		p, err := config.ProtocolFromString(name)
		if err != nil {
			l.send(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: n.Instance, Error: err.Error()})
			return
		}
		spec.Protocols = append(spec.Protocols, p)
	}
	spec.FixedPorts = map[string]uint32{}
	for name, port := range n.FixedPorts {
		spec.FixedPorts[name] = uint32(port)
	}
	// A need child that dies is restarted here first, on the same ports,
	// as the module's restart policy says (always when it names none):
	// that is much faster than the LAN manager re-offering the need, and
	// the need stays granted to this master meanwhile (down with
	// restarting), so no other master runs a duplicate. When the local
	// restarts give up (policy, crash loop) the need goes back to the LAN.
	if m.Restart == "" {
		spec.Restart = allexv1.RestartPolicy_RESTART_POLICY_ALWAYS
	}
	if _, err := a.Start(spec, n.Instance); err != nil {
		a.log.Warn("cannot start granted need", "instance", n.Instance, "error", err)
		l.send(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: n.Instance, Error: err.Error()})
		return
	}
	a.log.Info("starting granted need", "instance", n.Instance, "module", n.Module)
}

// childReady reports a need child spawned once it is ready.
func (l *lanState) childReady(p *proc, pid int) {
	if p.needID == "" {
		return
	}
	a := l.a
	a.mu.Lock()
	if p.suppressDown || p.spawnedSent {
		a.mu.Unlock()
		return
	}
	p.spawnedSent = true
	sp := &lanwire.Spawned{Instance: p.needID, PID: pid, Ports: lanwire.Ports(p.ports), StartedAt: time.Now()}
	if st := p.sup.Status(); !st.StartedAt.IsZero() {
		sp.StartedAt = st.StartedAt
	}
	a.mu.Unlock()
	l.send(lanwire.TypeSpawned, sp)
	l.reportCapacity()
}

// childRestarting tells the LAN manager that a need child it had published
// is down and being restarted here: when a backoff starts, or, for an
// immediate restart, when the new run is running. The need stays granted
// to this master; the next ready run is reported spawned again.
func (l *lanState) childRestarting(p *proc) {
	if p.needID == "" {
		return
	}
	a := l.a
	a.mu.Lock()
	if !p.spawnedSent || p.suppressDown {
		a.mu.Unlock()
		return
	}
	p.spawnedSent = false
	ev := p.lastExit
	a.mu.Unlock()
	reason := ev.Message
	if reason == "" {
		reason = "restarting"
	}
	l.send(lanwire.TypeDown, &lanwire.Down{Instance: p.needID, PID: ev.PID, ExitCode: ev.ExitCode, Signal: ev.Signal, Reason: reason, Restarting: true})
}

// childFinished tells the LAN manager a need child is gone, and uses the
// freed capacity for other offered needs.
func (l *lanState) childFinished(p *proc, runErr error) {
	if p.needID != "" {
		a := l.a
		a.mu.Lock()
		suppress, spawned := p.suppressDown, p.spawnedSent
		st := p.sup.Status()
		a.mu.Unlock()
		switch {
		case suppress:
		case !spawned:
			msg := "child ended before it was ready"
			if runErr != nil {
				msg = runErr.Error()
			}
			l.send(lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: p.needID, Error: msg})
		default:
			reason := "exited"
			if runErr != nil {
				reason = runErr.Error()
			}
			l.send(lanwire.TypeDown, &lanwire.Down{Instance: p.needID, PID: st.PID, ExitCode: st.ExitCode, Signal: st.Signal, Reason: reason})
		}
	}
	l.reportCapacity()
	l.claimOffered()
}

// reportCapacity keeps the LAN manager's view of this machine's load
// current after a start or an exit. The LAN manager offers needs by
// whether a machine is full, so a change of that goes out at once; other
// changes go out at most every capacityEvery, the latest state last, so a
// start of hundreds of children is not also hundreds of capacity frames
// for both sides to encode, send and decode.
func (l *lanState) reportCapacity() {
	l.mu.Lock()
	capa := l.a.capacity()
	if l.capKnown && sameCapacity(capa, l.capLast) {
		// Nothing new, as after a child restarted in place: the frame
		// would only cost both sides work, in the middle of the restart.
		l.mu.Unlock()
		return
	}
	if wait := capacityEvery - time.Since(l.capSent); capa.Full() == l.capLast.Full() && wait > 0 {
		if l.capTimer == nil {
			l.capTimer = time.AfterFunc(wait, func() {
				l.mu.Lock()
				l.capTimer = nil
				l.mu.Unlock()
				l.reportCapacity()
			})
		}
		l.mu.Unlock()
		return
	}
	l.capSent = time.Now()
	l.capLast, l.capKnown = capa, true
	l.mu.Unlock()
	l.send(lanwire.TypeCapacity, &capa)
}

// noteHelloCapacity records the capacity a hello carried: the LAN manager
// of the new session knows it, and frames queued before the link dropped
// were lost.
func (l *lanState) noteHelloCapacity(c lanwire.Capacity) {
	l.mu.Lock()
	l.capLast, l.capKnown = c, true
	l.mu.Unlock()
}

func sameCapacity(a, b lanwire.Capacity) bool {
	return a.MaxProcesses == b.MaxProcesses && a.Running == b.Running && maps.Equal(a.FreePorts, b.FreePorts)
}

// stopNeedChild stops a need child the LAN manager no longer wants here,
// without reporting it down (the LAN manager already knows).
func (l *lanState) stopNeedChild(instance string) {
	a := l.a
	a.mu.Lock()
	p, ok := a.procs[instance]
	if ok && p.needID != "" {
		p.suppressDown = true
	}
	a.mu.Unlock()
	if !ok || p.needID == "" {
		return
	}
	// Stopping waits for the child; the link goroutine must keep reading.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := a.Stop(ctx, instance, true); err != nil {
			a.log.Warn("cannot stop need child", "instance", instance, "error", err)
		}
	}()
}
