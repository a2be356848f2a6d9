package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/allex-go/allex/agent/modspec"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// childByPIDLocked finds the child a caller belongs to: the child's own
// pid, or any member of its process group (a wrapper such as `go run` or a
// shell makes the real program a grandchild). pid comes from the kernel
// (SO_PEERCRED), never from the request.
func (a *Agent) childByPIDLocked(pid int) (*proc, error) {
	p, _, err := a.runByPIDLocked(pid)
	return p, err
}

// runByPIDLocked is childByPIDLocked that also returns the pid of the
// child's current run, which pid is or belongs to.
func (a *Agent) runByPIDLocked(pid int) (*proc, int, error) {
	if pid <= 0 {
		return nil, 0, fmt.Errorf("%w: caller pid unknown", ErrPermission)
	}
	pgid := processGroup(pid)
	for _, p := range a.procs {
		if isDone(p) {
			continue
		}
		cp := p.sup.PID()
		if cp > 0 && (cp == pid || cp == pgid) {
			return p, cp, nil
		}
	}
	return nil, 0, fmt.Errorf("%w: pid %d was not spawned by this master", ErrPermission, pid)
}

// registration is what a run of a child said when it registered.
type registration struct {
	run    int // the pid the master started; 0: none
	caller int // the pid that registered: run or a member of its group
	socket string
}

// registerLocked records a registration. early says its run's running
// event has not been delivered yet (a restart's events wait for the new
// child to be ready): onEvent then publishes the registered event after
// it, so watchers see a run's events in order.
func (p *proc) registerLocked(r registration) (early bool) {
	if p.reg.run != 0 && p.reg.run != r.run {
		// The old run's exit event is still on its way.
		p.prevReg = p.reg
	}
	p.reg = r
	return p.runningPID != r.run
}

// Register records a child's announcement. The pid it claims and the
// instance it names must match what the kernel and the master know.
func (a *Agent) Register(peerPID int, req *allexv1.RegisterRequest) (*allexv1.ProcessInfo, error) {
	if req.GetPid() != 0 && int(req.GetPid()) != peerPID {
		return nil, fmt.Errorf("%w: caller claims pid %d but the socket says pid %d", ErrPermission, req.GetPid(), peerPID)
	}
	a.mu.Lock()
	p, run, err := a.runByPIDLocked(peerPID)
	if err != nil {
		a.mu.Unlock()
		return nil, err
	}
	if req.GetInstance() != "" && req.GetInstance() != p.spec.GetInstance() {
		a.mu.Unlock()
		return nil, fmt.Errorf("%w: pid %d is instance %s, not %s", ErrPermission, peerPID, p.spec.GetInstance(), req.GetInstance())
	}
	if s := req.GetProcessSocket(); s != "" {
		// The master later dials this path to ask for a graceful stop, so a
		// child may only name its own per-process socket.
		if filepath.Base(s) != "allexprocess."+strconv.Itoa(peerPID) || !filepath.IsAbs(s) {
			a.mu.Unlock()
			return nil, fmt.Errorf("%w: process socket %q: want an absolute path ending in allexprocess.%d", ErrInvalid, s, peerPID)
		}
	}
	early := p.registerLocked(registration{run: run, caller: peerPID, socket: req.GetProcessSocket()})
	info := a.infoLocked(p)
	a.mu.Unlock()
	if !early {
		a.publish(allexv1.EventKind_EVENT_KIND_REGISTERED, p, peerPID, "")
	}
	return info, nil
}

// ReportReady marks the calling child ready (readiness sdk).
func (a *Agent) ReportReady(peerPID int) error {
	a.mu.Lock()
	p, err := a.childByPIDLocked(peerPID)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	if err := p.sup.MarkReady(p.sup.PID()); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// ReportLifecycle publishes an event on behalf of the calling child.
func (a *Agent) ReportLifecycle(peerPID int, kind, msg string) error {
	if len(kind) > 64 || len(msg) > 4096 {
		return fmt.Errorf("%w: kind or message too long (64 / 4096 bytes)", ErrInvalid)
	}
	a.mu.Lock()
	p, err := a.childByPIDLocked(peerPID)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	a.publish(allexv1.EventKind_EVENT_KIND_CHILD, p, peerPID, kind+": "+msg)
	return nil
}

// Ports answers port queries: the caller's own (no instance or module),
// one instance's, or every instance of a module.
func (a *Agent) Ports(peerPID int, instance, module string) ([]*allexv1.InstancePorts, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*allexv1.InstancePorts
	add := func(p *proc) {
		out = append(out, &allexv1.InstancePorts{Instance: p.spec.GetInstance(), Module: p.spec.GetModule(), Ports: portList(p)})
	}
	switch {
	case instance != "":
		p, ok := a.procs[instance]
		if !ok || isDone(p) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, instance)
		}
		add(p)
	case module != "":
		for _, p := range a.procs {
			if p.spec.GetModule() == module && !isDone(p) {
				add(p)
			}
		}
	default:
		p, err := a.childByPIDLocked(peerPID)
		if err != nil {
			return nil, fmt.Errorf("%w (name an instance or module to look up others)", err)
		}
		add(p)
	}
	return out, nil
}

// AllocatePort gives the calling child an extra port, held until it exits.
func (a *Agent) AllocatePort(peerPID int, protocol allexv1.Protocol) (uint32, error) {
	name, err := modspec.ProtocolNameChecked(protocol)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.childByPIDLocked(peerPID)
	if err != nil {
		return 0, err
	}
	port, err := a.ports.Allocate(name, p.owner)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrExhausted, err)
	}
	p.extra = append(p.extra, &allexv1.PortAssignment{Protocol: protocol, Port: uint32(port), Extra: true})
	return uint32(port), nil
}

// ReleasePort gives back an extra port of the calling child.
func (a *Agent) ReleasePort(peerPID int, protocol allexv1.Protocol, port uint32) error {
	name, err := modspec.ProtocolNameChecked(protocol)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.childByPIDLocked(peerPID)
	if err != nil {
		return err
	}
	for i, e := range p.extra {
		if e.GetProtocol() == protocol && e.GetPort() == port {
			if err := a.ports.Release(name, uint16(port), p.owner); err != nil {
				return fmt.Errorf("%w: %w", ErrInvalid, err)
			}
			p.extra = append(p.extra[:i], p.extra[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("%w: %s port %d is not an extra port of %s", ErrNotFound, name, port, p.spec.GetInstance())
}

// shutdownChild asks a registered child to exit through its own
// allex.v1.Process socket; an error makes the supervisor fall back to
// signals.
func (a *Agent) shutdownChild(ctx context.Context, p *proc, pid int, grace time.Duration) error {
	a.mu.Lock()
	var sock string
	if p.reg.run == pid {
		sock = p.reg.socket
	}
	a.mu.Unlock()
	if sock == "" {
		return fmt.Errorf("%s serves no process socket: %w", p.spec.GetInstance(), errors.ErrUnsupported)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", sock, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := allexv1.NewProcessClient(conn).Shutdown(ctx, &allexv1.ShutdownRequest{Grace: durationpb.New(grace)}); err != nil {
		return fmt.Errorf("shutdown %s: %w", p.spec.GetInstance(), err)
	}
	return nil
}

// removeLeftSocket removes the process socket of a run whose whole process
// group has died, unless someone answers on it: a child killed with SIGKILL
// cannot remove its own, and /tmp would collect them. Register only accepts
// paths named after the caller's pid, and only sockets are removed.
func removeLeftSocket(path string) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return
	}
	if conn, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		// A new process with the same pid already serves it.
		_ = conn.Close()
		return
	}
	_ = os.Remove(path)
}
