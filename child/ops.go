package child

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// Port returns the port assigned for proto, or 0 when none was.
func (c *Child) Port(proto string) uint16 { return c.env.Ports[proto] }

// Ports returns a copy of the assigned ports by protocol.
func (c *Child) Ports() map[string]uint16 { return cloneEnv(c.env).Ports }

// Listen listens on all interfaces on the port assigned for proto ("tcp",
// "http" or "ws"). With AutoReady, the call that completes the set of
// assigned protocols reports readiness; if that report fails the listener is
// closed and the error returned, so a listener is only handed out when the
// master knows the child is ready (or readiness is not automatic).
func (c *Child) Listen(proto string) (net.Listener, error) {
	if _, err := protocolEnum(proto); err != nil {
		return nil, fmt.Errorf("child: listen: %w", err)
	}
	port, ok := c.env.Ports[proto]
	if !ok {
		return nil, fmt.Errorf("child: listen: no %s port assigned (is %q in the module's protocols?)", proto, proto)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, errors.New("child: listen after Close")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(int(port))))
	if err != nil {
		return nil, fmt.Errorf("child: listen on %s port %d: %w", proto, port, err)
	}
	c.mu.Lock()
	c.listened[proto] = true
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(c.lifetime, callTimeout)
	defer cancel()
	if err := c.maybeAutoReady(ctx); err != nil {
		_ = ln.Close()
		c.mu.Lock()
		delete(c.listened, proto)
		c.mu.Unlock()
		return nil, err
	}
	return ln, nil
}

// maybeAutoReady reports readiness once, when AutoReady is on, the master is
// connected and every assigned protocol has been listened on. Both Start and
// Listen call it, so listening before Start works too.
func (c *Child) maybeAutoReady(ctx context.Context) error {
	c.mu.Lock()
	if !c.autoReady || c.readySent || c.master == nil {
		c.mu.Unlock()
		return nil
	}
	for proto := range c.env.Ports {
		if !c.listened[proto] {
			c.mu.Unlock()
			return nil
		}
	}
	// Claimed before the call so concurrent Listens report only once; given
	// back if the call fails so a retry can report.
	c.readySent = true
	master := c.master
	c.mu.Unlock()
	if _, err := master.ReportReady(ctx, &allexv1.ReportReadyRequest{}); err != nil {
		c.mu.Lock()
		c.readySent = false
		c.mu.Unlock()
		return fmt.Errorf("child: automatic ready report: %w", wrapMasterErr(err))
	}
	c.log.Debug("reported ready")
	return nil
}

// Ready tells the master this child is ready (readiness mode "sdk"). It
// always calls the master, even after an automatic report.
func (c *Child) Ready(ctx context.Context) error {
	master, err := c.masterClient()
	if err != nil {
		return fmt.Errorf("child: ready: %w", err)
	}
	if _, err := master.ReportReady(ctx, &allexv1.ReportReadyRequest{}); err != nil {
		return fmt.Errorf("child: ready: %w", wrapMasterErr(err))
	}
	c.mu.Lock()
	c.readySent = true
	c.mu.Unlock()
	return nil
}

// AllocatePort asks the master for one extra port of proto. Extra ports are
// not part of Ports and cannot be used with Listen; give them back with
// ReleasePort.
func (c *Child) AllocatePort(ctx context.Context, proto string) (uint16, error) {
	p, err := protocolEnum(proto)
	if err != nil {
		return 0, fmt.Errorf("child: allocate port: %w", err)
	}
	master, err := c.masterClient()
	if err != nil {
		return 0, fmt.Errorf("child: allocate port: %w", err)
	}
	resp, err := master.AllocatePort(ctx, &allexv1.AllocatePortRequest{Protocol: p})
	if err != nil {
		return 0, fmt.Errorf("child: allocate %s port: %w", proto, wrapMasterErr(err))
	}
	port := resp.GetPort()
	if port == 0 || port > 65535 {
		return 0, fmt.Errorf("child: allocate %s port: master answered invalid port %d", proto, port)
	}
	return uint16(port), nil
}

// ReleasePort gives an extra port back to the master.
func (c *Child) ReleasePort(ctx context.Context, proto string, port uint16) error {
	p, err := protocolEnum(proto)
	if err != nil {
		return fmt.Errorf("child: release port: %w", err)
	}
	if port == 0 {
		return errors.New("child: release port: port is 0")
	}
	master, err := c.masterClient()
	if err != nil {
		return fmt.Errorf("child: release port: %w", err)
	}
	if _, err := master.ReleasePort(ctx, &allexv1.ReleasePortRequest{Protocol: p, Port: uint32(port)}); err != nil {
		return fmt.Errorf("child: release %s port %d: %w", proto, port, wrapMasterErr(err))
	}
	return nil
}

// LookupPorts returns the ports of other services on this machine: those of
// one instance, of every instance of a module, or (both empty) the caller's
// own.
func (c *Child) LookupPorts(ctx context.Context, module, instance string) ([]*allexv1.InstancePorts, error) {
	master, err := c.masterClient()
	if err != nil {
		return nil, fmt.Errorf("child: lookup ports: %w", err)
	}
	resp, err := master.GetPorts(ctx, &allexv1.GetPortsRequest{Module: module, Instance: instance})
	if err != nil {
		return nil, fmt.Errorf("child: lookup ports (module %q, instance %q): %w", module, instance, wrapMasterErr(err))
	}
	return resp.GetInstances(), nil
}

// Report records a lifecycle event of the child's own with the master.
func (c *Child) Report(ctx context.Context, kind, message string) error {
	if kind == "" {
		return errors.New("child: report: kind is empty")
	}
	master, err := c.masterClient()
	if err != nil {
		return fmt.Errorf("child: report: %w", err)
	}
	if _, err := master.ReportLifecycle(ctx, &allexv1.ReportLifecycleRequest{Kind: kind, Message: message}); err != nil {
		return fmt.Errorf("child: report %q: %w", kind, wrapMasterErr(err))
	}
	return nil
}

// ShutdownRequested is closed when the master calls Process.Shutdown.
func (c *Child) ShutdownRequested() <-chan struct{} { return c.shutdownCh }

// ShutdownGrace is the grace period of the Shutdown request, 0 before one
// arrived or when it carried none.
func (c *Child) ShutdownGrace() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.grace
}

// SetHealthy sets what Process.Health answers.
func (c *Child) SetHealthy(ok bool, msg string) {
	c.mu.Lock()
	c.healthy, c.healthMsg = ok, msg
	c.mu.Unlock()
}

func (c *Child) masterClient() (allexv1.MachineManagerClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("child is closed")
	}
	if c.master == nil {
		return nil, fmt.Errorf("not registered with a master: %w", ErrNoMaster)
	}
	return c.master, nil
}

// wrapMasterErr marks transport failures as ErrNoMaster while keeping the
// gRPC status reachable with errors.As / status.FromError.
func wrapMasterErr(err error) error {
	if status.Code(err) == codes.Unavailable {
		return fmt.Errorf("%w: %w", ErrNoMaster, err)
	}
	return err
}

// processServer serves allex.v1.Process for one Child.
type processServer struct {
	allexv1.UnimplementedProcessServer
	c *Child
}

func (s *processServer) Info(context.Context, *allexv1.InfoRequest) (*allexv1.InfoResponse, error) {
	c := s.c
	resp := &allexv1.InfoResponse{
		Module:    c.env.Module,
		Instance:  c.env.Instance,
		Pid:       int32(c.pid),
		StartedAt: timestamppb.New(c.startedAt),
	}
	for _, proto := range slices.Sorted(maps.Keys(c.env.Ports)) {
		p, _ := protocolEnum(proto)
		resp.Ports = append(resp.Ports, &allexv1.PortAssignment{Protocol: p, Port: uint32(c.env.Ports[proto])})
	}
	return resp, nil
}

func (s *processServer) Health(context.Context, *allexv1.HealthRequest) (*allexv1.HealthResponse, error) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return &allexv1.HealthResponse{Healthy: s.c.healthy, Message: s.c.healthMsg}, nil
}

func (s *processServer) Shutdown(_ context.Context, req *allexv1.ShutdownRequest) (*allexv1.ShutdownResponse, error) {
	c := s.c
	var grace time.Duration
	if g := req.GetGrace(); g != nil {
		if err := g.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "grace: %v", err)
		}
		if grace = g.AsDuration(); grace < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "grace %v is negative", grace)
		}
	}
	c.mu.Lock()
	select {
	case <-c.shutdownCh:
		// A repeated request may shorten the grace, never lengthen it.
		if grace < c.grace {
			c.grace = grace
		}
	default:
		c.grace = grace
		close(c.shutdownCh)
	}
	c.mu.Unlock()
	c.log.Info("shutdown requested", "grace", grace)
	return &allexv1.ShutdownResponse{}, nil
}
