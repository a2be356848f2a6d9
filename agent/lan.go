package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/allex-go/allex/agent/lancreds"
	"github.com/allex-go/allex/agent/lanlink"
	"github.com/allex-go/allex/agent/modspec"
	"github.com/allex-go/allex/agent/needs"
	"github.com/allex-go/allex/agent/spawner"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/boottime"
	"github.com/allex-go/allex/lanwire"
)

// The agent's part in the LAN's needs: package needs decides what to
// claim, start, stop and report, and calls the agent's public methods
// below; the agent tells it what its copies' children do. Nothing here
// holds the agent's lock while calling into the controller.

// lan is the LAN link and its needs controller, and, on a LAN that
// speaks TLS, the master's certificate.
type lan struct {
	ctrl  *needs.Controller
	link  *lanlink.Link
	creds *lancreds.Creds // nil: laninsecure
}

func (a *Agent) newLAN() (*lan, error) {
	cfg := a.opts.Config
	ctrl := needs.NewController(needs.Config{
		MachineID:    cfg.MachineID,
		Identity:     a.opts.Identity,
		Address:      cfg.Address,
		Version:      a.opts.Version,
		Modules:      cfg.ModuleNames(),
		MaxProcesses: cfg.MaxProcesses,
		Check:        a.CheckNeed,
		Logger:       a.log.Named("needs"),
	}, a, leaseSink{a}, boottime.Now)
	lc := lanlink.Config{
		Address: cfg.LanManagerAddress,
		Port:    cfg.LanManagerPort,
		Token:   a.opts.Token,
		Handler: ctrl,
		Logger:  a.log.Named("lanlink"),
	}
	var creds *lancreds.Creds
	if !cfg.LanInsecure {
		var err error
		if creds, err = a.lanCreds(); err != nil {
			return nil, fmt.Errorf("LAN credentials: %w", err)
		}
		lc.TLS, lc.Ready = creds.TLS(), creds.Ready
	}
	link, err := lanlink.New(lc)
	if err != nil {
		return nil, fmt.Errorf("LAN link: %w", err)
	}
	ctrl.SetLink(link)
	return &lan{ctrl: ctrl, link: link, creds: creds}, nil
}

// lanCreds loads the master's certificate from <statedir>/lan, or
// readies a join with its token.
func (a *Agent) lanCreds() (*lancreds.Creds, error) {
	cfg := a.opts.Config
	if a.opts.StateDir == "" {
		return nil, errors.New("a LAN that speaks TLS needs a state dir to keep the master's certificate in")
	}
	port := cfg.LanManagerPort
	if port == 0 {
		port = lanwire.DefaultPort
	}
	urls, err := lanlink.URLs(cfg.LanManagerAddress, port, true)
	if err != nil {
		return nil, err
	}
	return lancreds.New(lancreds.Config{
		Dir: filepath.Join(a.opts.StateDir, "lan"), MachineID: cfg.MachineID, Token: a.opts.Token,
		URLs: urls, Logger: a.log.Named("lancreds"),
	})
}

// StartNeed starts the child of a copy the LAN manager granted: the
// module as configured, with the need's properties, protocols and fixed
// ports, fenced by the lease. It returns the child's ports.
func (a *Agent) StartNeed(n lanwire.Need) (lanwire.Ports, error) {
	spec, err := a.needSpec(n)
	if err != nil {
		return nil, err
	}
	// A need child that dies is restarted here first, on the same ports,
	// as the module's restart policy says (always when it names none):
	// much faster than the LAN manager offering the need again, and the
	// copy stays granted to this master meanwhile.
	if a.opts.Config.Modules[n.Module].Restart == "" {
		spec.Restart = allexv1.RestartPolicy_RESTART_POLICY_ALWAYS
	}
	info, err := a.Start(spec, n.Instance)
	if err != nil {
		return nil, err
	}
	ports := lanwire.Ports{}
	for _, pa := range info.GetPorts() {
		ports[modspec.ProtocolName(pa.GetProtocol())] = uint16(pa.GetPort())
	}
	return ports, nil
}

// CheckNeed says why this master cannot run the need as it is (nil: it
// can): its module is not configured here, or the need asks for a
// protocol or fixed port the module does not declare.
func (a *Agent) CheckNeed(n lanwire.Need) error {
	_, err := a.needSpec(n)
	return err
}

// needSpec is the spec of a need's child: the module as configured, with
// the need's properties, protocols and fixed ports.
func (a *Agent) needSpec(n lanwire.Need) (*allexv1.ModuleSpec, error) {
	m, ok := a.opts.Config.Modules[n.Module]
	if !ok {
		return nil, fmt.Errorf("%w %q: not configured on this master", ErrUnknownModule, n.Module)
	}
	protocols, err := needProtocols(n, m.Protocols)
	if err != nil {
		return nil, err
	}
	spec := m.Spec(n.Module, n.Instance, n.Properties)
	spec.Protocols = nil
	for _, name := range protocols {
		p, err := modspec.ProtocolEnum(name)
		if err != nil {
			return nil, fmt.Errorf("need %s: %w", n.Instance, err)
		}
		spec.Protocols = append(spec.Protocols, p)
	}
	spec.FixedPorts = map[string]uint32{}
	for name, port := range n.FixedPorts {
		spec.FixedPorts[name] = uint32(port)
	}
	return spec, nil
}

// needProtocols are the protocols a need's child gets ports for: the
// need's, or the module's when the need names none. A need may ask for
// fewer than its module declares, not for others; a module that declares
// none takes what the need asks. Every fixed port must be of one of them.
func needProtocols(n lanwire.Need, module []string) ([]string, error) {
	protocols := n.Protocols
	if len(protocols) == 0 {
		protocols = module
	}
	for _, p := range protocols {
		if len(module) > 0 && !slices.Contains(module, p) {
			return nil, fmt.Errorf("need %s asks for protocol %s, which module %s does not declare on this master (its protocols: %s)",
				n.Instance, p, n.Module, strings.Join(module, ","))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(n.FixedPorts)) {
		if !slices.Contains(protocols, name) {
			return nil, fmt.Errorf("need %s: fixed %s port %d: %s is not one of its protocols (%s)",
				n.Instance, name, n.FixedPorts[name], name, cmp.Or(strings.Join(protocols, ","), "none"))
		}
	}
	return slices.Clone(protocols), nil
}

// StopNeed stops a copy's child and forgets it; it does not wait.
func (a *Agent) StopNeed(instance string) {
	// Stopping waits for the child; the controller must keep going.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := a.Stop(ctx, instance, true); err != nil {
			a.log.Warn("cannot stop need child", "instance", instance, "error", err)
		}
	}()
}

// Busy says whether a child of that instance name runs.
func (a *Agent) Busy(instance string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.procs[instance]
	return ok && !isDone(p)
}

// Capacity is what this master can still take on.
func (a *Agent) Capacity() lanwire.Capacity {
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

// needEvent tells the controller what a copy's child did.
func (a *Agent) needEvent(p *proc, ev spawner.Event) {
	if p.needID == "" || a.lan == nil {
		return
	}
	if ce, ok := childEvent(p.needID, ev); ok {
		a.lan.ctrl.Child(ce)
	}
}

// childEvent is a supervisor event as the needs controller takes it;
// false for the events it does not follow (a child's end comes from
// needEnded, once the supervisor is done).
func childEvent(needID string, ev spawner.Event) (needs.ChildEvent, bool) {
	ce := needs.ChildEvent{Instance: needID, PID: ev.PID, ExitCode: ev.ExitCode, Signal: ev.Signal, Reason: ev.Message, Delay: ev.Delay}
	switch ev.Kind {
	case spawner.EventRunning:
		ce.Kind, ce.StartedAt = needs.ChildRunning, ev.Time
	case spawner.EventReady:
		ce.Kind = needs.ChildReady
	case spawner.EventExited:
		ce.Kind = needs.ChildExited
	case spawner.EventBackoff:
		ce.Kind = needs.ChildBackoff
	default:
		return needs.ChildEvent{}, false
	}
	return ce, true
}

// needEnded tells the controller a copy's child is done for good.
func (a *Agent) needEnded(p *proc, err error) {
	if p.needID == "" || a.lan == nil {
		return
	}
	a.lan.ctrl.Child(endedEvent(p.needID, err))
}

// endedEvent is the end of a copy's child, err the supervisor's result.
func endedEvent(needID string, err error) needs.ChildEvent {
	reason := "exited"
	if err != nil {
		reason = err.Error()
	}
	return needs.ChildEvent{Kind: needs.ChildEnded, Instance: needID, Reason: reason}
}

func (a *Agent) linkState() string {
	if a.lan == nil {
		return "disabled"
	}
	return a.lan.link.State()
}
