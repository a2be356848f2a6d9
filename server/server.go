package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/allex-go/allex/agent"
	"github.com/allex-go/allex/agent/logfile"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// Server serves the machine socket for one agent.
type Server struct {
	allexv1.UnimplementedMachineManagerServer
	log    hclog.Logger
	agent  *agent.Agent
	grpc   *grpc.Server
	health *health.Server
}

// New builds a server; Serve starts it.
func New(a *agent.Agent, log hclog.Logger) *Server {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	s := &Server{log: log, agent: a, health: health.NewServer()}
	s.grpc = grpc.NewServer(grpc.Creds(peerCreds{}))
	allexv1.RegisterMachineManagerServer(s.grpc, s)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(allexv1.MachineManager_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// Serve answers on ln until ctx is done, then stops gracefully (streams
// such as followed logs are cut after a short grace).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		s.grpc.Stop()
	}
	<-errc
	return nil
}

// toStatus maps agent errors onto gRPC codes so clients can tell a missing
// process from a refused caller.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, agent.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, agent.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, agent.ErrInvalid), errors.Is(err, agent.ErrUnknownModule):
		code = codes.InvalidArgument
	case errors.Is(err, agent.ErrPermission):
		code = codes.PermissionDenied
	case errors.Is(err, agent.ErrExhausted):
		code = codes.ResourceExhausted
	case errors.Is(err, agent.ErrNotRunning):
		code = codes.Unavailable
	case errors.Is(err, agent.ErrNeedChild):
		code = codes.FailedPrecondition
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

// callerPID is the kernel's word on who is calling.
func callerPID(ctx context.Context) (int, error) {
	p, ok := PeerFromContext(ctx)
	if !ok {
		return 0, status.Error(codes.PermissionDenied, "caller cannot be identified (no peer credentials)")
	}
	return p.PID, nil
}

func (s *Server) Register(ctx context.Context, req *allexv1.RegisterRequest) (*allexv1.RegisterResponse, error) {
	pid, err := callerPID(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.agent.Register(pid, req)
	if err != nil {
		s.log.Warn("refused registration", "peer_pid", pid, "claimed_pid", req.GetPid(), "instance", req.GetInstance(), "error", err)
		return nil, toStatus(err)
	}
	return &allexv1.RegisterResponse{Process: info}, nil
}

func (s *Server) ReportReady(ctx context.Context, _ *allexv1.ReportReadyRequest) (*allexv1.ReportReadyResponse, error) {
	pid, err := callerPID(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.agent.ReportReady(pid); err != nil {
		return nil, toStatus(err)
	}
	return &allexv1.ReportReadyResponse{}, nil
}

func (s *Server) ReportLifecycle(ctx context.Context, req *allexv1.ReportLifecycleRequest) (*allexv1.ReportLifecycleResponse, error) {
	pid, err := callerPID(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.agent.ReportLifecycle(pid, req.GetKind(), req.GetMessage()); err != nil {
		return nil, toStatus(err)
	}
	return &allexv1.ReportLifecycleResponse{}, nil
}

func (s *Server) GetPorts(ctx context.Context, req *allexv1.GetPortsRequest) (*allexv1.GetPortsResponse, error) {
	pid := 0
	if p, ok := PeerFromContext(ctx); ok {
		pid = p.PID
	}
	out, err := s.agent.Ports(pid, req.GetInstance(), req.GetModule())
	if err != nil {
		return nil, toStatus(err)
	}
	return &allexv1.GetPortsResponse{Instances: out}, nil
}

func (s *Server) AllocatePort(ctx context.Context, req *allexv1.AllocatePortRequest) (*allexv1.AllocatePortResponse, error) {
	pid, err := callerPID(ctx)
	if err != nil {
		return nil, err
	}
	port, err := s.agent.AllocatePort(pid, req.GetProtocol())
	if err != nil {
		return nil, toStatus(err)
	}
	return &allexv1.AllocatePortResponse{Port: port}, nil
}

func (s *Server) ReleasePort(ctx context.Context, req *allexv1.ReleasePortRequest) (*allexv1.ReleasePortResponse, error) {
	pid, err := callerPID(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.agent.ReleasePort(pid, req.GetProtocol(), req.GetPort()); err != nil {
		return nil, toStatus(err)
	}
	return &allexv1.ReleasePortResponse{}, nil
}

func (s *Server) ListProcesses(context.Context, *allexv1.ListProcessesRequest) (*allexv1.ListProcessesResponse, error) {
	return &allexv1.ListProcessesResponse{Processes: s.agent.List()}, nil
}

func (s *Server) GetProcess(_ context.Context, req *allexv1.GetProcessRequest) (*allexv1.GetProcessResponse, error) {
	info, err := s.agent.Get(req.GetInstance())
	if err != nil {
		return nil, toStatus(err)
	}
	return &allexv1.GetProcessResponse{Process: info}, nil
}

func (s *Server) StartProcess(_ context.Context, req *allexv1.StartProcessRequest) (*allexv1.StartProcessResponse, error) {
	if req.GetSpec() == nil {
		return nil, status.Error(codes.InvalidArgument, "spec is required")
	}
	info, err := s.agent.StartProcess(req.GetSpec())
	if err != nil {
		return nil, toStatus(err)
	}
	return &allexv1.StartProcessResponse{Process: info}, nil
}

func (s *Server) StopProcess(ctx context.Context, req *allexv1.StopProcessRequest) (*allexv1.StopProcessResponse, error) {
	info, err := s.agent.StopProcess(ctx, req.GetInstance(), req.GetRemove(), req.GetForce())
	if err != nil {
		return nil, toStatus(err)
	}
	return &allexv1.StopProcessResponse{Process: info}, nil
}

func (s *Server) RestartProcess(ctx context.Context, req *allexv1.RestartProcessRequest) (*allexv1.RestartProcessResponse, error) {
	info, err := s.agent.Restart(ctx, req.GetInstance())
	if err != nil {
		return nil, toStatus(err)
	}
	return &allexv1.RestartProcessResponse{Process: info}, nil
}

func (s *Server) WatchEvents(req *allexv1.WatchEventsRequest, stream grpc.ServerStreamingServer[allexv1.WatchEventsResponse]) error {
	ch, cancel := s.agent.Subscribe(req.GetInstance())
	defer cancel()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return status.Error(codes.ResourceExhausted, "watcher fell too far behind; events were dropped")
			}
			if err := stream.Send(&allexv1.WatchEventsResponse{Event: ev}); err != nil {
				return err
			}
		}
	}
}

func (s *Server) Status(context.Context, *allexv1.StatusRequest) (*allexv1.StatusResponse, error) {
	return s.agent.Status(), nil
}

// logChunk bounds one Logs message; followChunk what a followed stream
// sends per poll, so that a child writing faster than the client reads
// leaves it behind (it skips rotated files, as tail -F does) rather than
// holding the call.
const (
	logChunk    = 32 << 10
	followChunk = 4 << 20
)

func (s *Server) Logs(req *allexv1.LogsRequest, stream grpc.ServerStreamingServer[allexv1.LogsResponse]) error {
	stdout, stderr, done, err := s.agent.LogFiles(req.GetInstance())
	if err != nil {
		return toStatus(err)
	}
	type src struct {
		kind allexv1.LogStream
		path string
		r    *logfile.Reader
	}
	var srcs []*src
	if req.GetStream() != allexv1.LogStream_LOG_STREAM_STDERR {
		srcs = append(srcs, &src{kind: allexv1.LogStream_LOG_STREAM_STDOUT, path: stdout})
	}
	if req.GetStream() != allexv1.LogStream_LOG_STREAM_STDOUT {
		srcs = append(srcs, &src{kind: allexv1.LogStream_LOG_STREAM_STDERR, path: stderr})
	}
	for _, sc := range srcs {
		// A log not written yet is read once it appears.
		r, err := logfile.OpenReader(sc.path, int(min(req.GetTailLines(), math.MaxInt32)))
		if err != nil {
			return status.Errorf(codes.Internal, "open %s: %v", sc.path, err)
		}
		defer r.Close()
		sc.r = r
	}
	buf := make([]byte, logChunk)
	// drain sends up to budget(src) bytes of each stream; a stream a
	// child floods cannot keep the others, or the end of the call, from
	// their turn.
	drain := func(budget func(*logfile.Reader) (int64, error)) error {
		for _, sc := range srcs {
			left, err := budget(sc.r)
			if err != nil {
				return status.Errorf(codes.Internal, "read %s: %v", sc.path, err)
			}
			for left > 0 {
				n, err := sc.r.Read(buf[:min(left, int64(len(buf)))])
				if n > 0 {
					left -= int64(n)
					if serr := stream.Send(&allexv1.LogsResponse{Stream: sc.kind, Data: append([]byte(nil), buf[:n]...)}); serr != nil {
						return serr
					}
				}
				if err == io.EOF || n == 0 {
					break
				}
				if err != nil {
					return status.Errorf(codes.Internal, "read %s: %v", sc.path, err)
				}
			}
		}
		return nil
	}
	// What the files hold when asked for; later writes are for -f.
	present := (*logfile.Reader).Pending
	if err := drain(present); err != nil || !req.GetFollow() {
		return err
	}
	perTick := func(*logfile.Reader) (int64, error) { return followChunk, nil }
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-done:
			// Pick up what the child wrote last, then end the stream.
			return drain(present)
		case <-tick.C:
			if err := drain(perTick); err != nil {
				return err
			}
		}
	}
}
