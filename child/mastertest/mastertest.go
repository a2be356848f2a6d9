// Package mastertest owns a small in-process allex.v1.MachineManager for
// tests of children: it serves the calls a child makes (Register,
// ReportReady, ReportLifecycle, GetPorts, AllocatePort, ReleasePort) over a
// real unix socket and records them. It is not the real master: it checks
// nothing and never spawns anything.
package mastertest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// Master is a recording MachineManager. Its methods are safe for concurrent
// use.
type Master struct {
	allexv1.UnimplementedMachineManagerServer

	// Path is the unix socket the master serves on.
	Path string

	mu        sync.Mutex
	changed   chan struct{}
	registers []*allexv1.RegisterRequest
	regPeers  []int
	readies   int
	readyPeer []int
	lifecycle []*allexv1.ReportLifecycleRequest
	getPorts  []*allexv1.GetPortsRequest
	allocated []*allexv1.AllocatePortRequest
	released  []*allexv1.ReleasePortRequest
	instances []*allexv1.InstancePorts
	nextPort  uint32
}

// New serves a Master on a fresh socket in a short temporary directory
// (unix socket paths must stay under 108 bytes) and stops it when the test
// ends.
func New(tb testing.TB) *Master {
	tb.Helper()
	dir, err := os.MkdirTemp("", "axm")
	if err != nil {
		tb.Fatalf("mastertest: temp dir: %v", err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	m := &Master{
		Path:     filepath.Join(dir, "mm.sock"),
		changed:  make(chan struct{}),
		nextPort: 40000,
	}
	ln, err := net.Listen("unix", m.Path)
	if err != nil {
		tb.Fatalf("mastertest: listen: %v", err)
	}
	srv := grpc.NewServer(grpc.Creds(peerCreds{}))
	allexv1.RegisterMachineManagerServer(srv, m)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return m
}

// notifyLocked wakes every Wait; m.mu must be held.
func (m *Master) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Wait polls cond after every recorded call until it holds, failing the test
// after timeout.
func (m *Master) Wait(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		ch := m.changed
		m.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("mastertest: timed out after %v waiting for %s", timeout, what)
		}
	}
}

// SetInstances sets what GetPorts answers (filtered by the request's
// instance and module; unfiltered when both are empty).
func (m *Master) SetInstances(instances []*allexv1.InstancePorts) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.instances = cloneAll(instances)
}

// Registrations returns the Register requests received so far.
func (m *Master) Registrations() []*allexv1.RegisterRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneAll(m.registers)
}

// RegisterPeerPIDs returns, for each Register request, the pid of the
// process that made it as the socket's peer credentials tell (Linux only;
// 0 elsewhere).
func (m *Master) RegisterPeerPIDs() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.regPeers)
}

// ReadyPeerPIDs is RegisterPeerPIDs for ReportReady calls.
func (m *Master) ReadyPeerPIDs() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.readyPeer)
}

// Readies counts ReportReady calls.
func (m *Master) Readies() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.readies
}

// Lifecycle returns the ReportLifecycle requests received so far.
func (m *Master) Lifecycle() []*allexv1.ReportLifecycleRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneAll(m.lifecycle)
}

// GetPortsRequests returns the GetPorts requests received so far.
func (m *Master) GetPortsRequests() []*allexv1.GetPortsRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneAll(m.getPorts)
}

// Allocated returns the AllocatePort requests received so far.
func (m *Master) Allocated() []*allexv1.AllocatePortRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneAll(m.allocated)
}

// Released returns the ReleasePort requests received so far.
func (m *Master) Released() []*allexv1.ReleasePortRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneAll(m.released)
}

func cloneAll[M proto.Message](in []M) []M {
	out := make([]M, len(in))
	for i, msg := range in {
		out[i] = proto.Clone(msg).(M)
	}
	return out
}

// Register records the request and answers with a minimal ProcessInfo.
func (m *Master) Register(ctx context.Context, req *allexv1.RegisterRequest) (*allexv1.RegisterResponse, error) {
	if req.GetInstance() == "" {
		return nil, status.Error(codes.InvalidArgument, "instance is empty")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.registers = append(m.registers, proto.Clone(req).(*allexv1.RegisterRequest))
	m.regPeers = append(m.regPeers, callerPID(ctx))
	m.notifyLocked()
	return &allexv1.RegisterResponse{Process: &allexv1.ProcessInfo{
		Instance:      req.GetInstance(),
		Pid:           req.GetPid(),
		State:         allexv1.ProcessState_PROCESS_STATE_RUNNING,
		Registered:    true,
		ProcessSocket: req.GetProcessSocket(),
	}}, nil
}

// ReportReady counts the call.
func (m *Master) ReportReady(ctx context.Context, _ *allexv1.ReportReadyRequest) (*allexv1.ReportReadyResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.readies++
	m.readyPeer = append(m.readyPeer, callerPID(ctx))
	m.notifyLocked()
	return &allexv1.ReportReadyResponse{}, nil
}

// ReportLifecycle records the request.
func (m *Master) ReportLifecycle(_ context.Context, req *allexv1.ReportLifecycleRequest) (*allexv1.ReportLifecycleResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lifecycle = append(m.lifecycle, proto.Clone(req).(*allexv1.ReportLifecycleRequest))
	m.notifyLocked()
	return &allexv1.ReportLifecycleResponse{}, nil
}

// GetPorts records the request and answers from SetInstances.
func (m *Master) GetPorts(_ context.Context, req *allexv1.GetPortsRequest) (*allexv1.GetPortsResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.getPorts = append(m.getPorts, proto.Clone(req).(*allexv1.GetPortsRequest))
	m.notifyLocked()
	resp := &allexv1.GetPortsResponse{}
	for _, ip := range m.instances {
		if req.GetInstance() != "" && ip.GetInstance() != req.GetInstance() {
			continue
		}
		if req.GetModule() != "" && ip.GetModule() != req.GetModule() {
			continue
		}
		resp.Instances = append(resp.Instances, proto.Clone(ip).(*allexv1.InstancePorts))
	}
	return resp, nil
}

// AllocatePort records the request and hands out ports counting up from
// 40000; nothing listens on them.
func (m *Master) AllocatePort(_ context.Context, req *allexv1.AllocatePortRequest) (*allexv1.AllocatePortResponse, error) {
	if req.GetProtocol() == allexv1.Protocol_PROTOCOL_UNSPECIFIED {
		return nil, status.Error(codes.InvalidArgument, "protocol is unspecified")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.allocated = append(m.allocated, proto.Clone(req).(*allexv1.AllocatePortRequest))
	port := m.nextPort
	m.nextPort++
	m.notifyLocked()
	return &allexv1.AllocatePortResponse{Port: port}, nil
}

// ReleasePort records the request.
func (m *Master) ReleasePort(_ context.Context, req *allexv1.ReleasePortRequest) (*allexv1.ReleasePortResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.released = append(m.released, proto.Clone(req).(*allexv1.ReleasePortRequest))
	m.notifyLocked()
	return &allexv1.ReleasePortResponse{}, nil
}

// DialProcess connects to a child's allex.v1.Process socket at path; the
// connection is closed when the test ends.
func DialProcess(t testing.TB, path string) allexv1.ProcessClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return allexv1.NewProcessClient(conn)
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
// Tests handing it to a child accept the small race of someone else taking
// it in between.
func FreePort(tb testing.TB) uint16 {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("mastertest: free port: %v", err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// FreePorts returns n distinct free ports (see FreePort).
func FreePorts(tb testing.TB, n int) []uint16 {
	tb.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	var ports []uint16
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("mastertest: free port: %v", err)
		}
		lns = append(lns, ln)
		ports = append(ports, uint16(ln.Addr().(*net.TCPAddr).Port))
	}
	return ports
}
