package child

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// ErrNoMaster is wrapped by every error caused by the master being
// unconfigured or unreachable, so callers can choose to run standalone.
var ErrNoMaster = errors.New("allexmaster not available")

// Bounds on the calls the library makes on its own, without a caller's
// context: registering inside Start when ctx has no deadline, automatic
// readiness from Listen, probing a socket path, and draining the Process
// server on Close.
const (
	callTimeout  = 30 * time.Second
	probeTimeout = 2 * time.Second
	drainTimeout = 5 * time.Second
)

// maxSocketPath is the smallest sun_path size among supported systems.
const maxSocketPath = 104

// Options configure a Child. Start from DefaultOptions: the zero value turns
// AutoReady off.
type Options struct {
	// Logger defaults to a null logger.
	Logger hclog.Logger
	// Env defaults to EnvFromEnviron(os.Environ()).
	Env *Env
	// SocketDir is where allexprocess.<pid> is created; default "/tmp"
	// (os.TempDir() on Windows).
	SocketDir string
	// AutoReady makes Listen report readiness once every assigned protocol
	// has been listened on.
	AutoReady bool
	// AllowStandalone makes Start log and return nil instead of an
	// ErrNoMaster error when there is no master to register with.
	AllowStandalone bool
}

// DefaultOptions returns the options most children want: environment from
// the process, sockets in /tmp and automatic readiness.
func DefaultOptions() Options {
	return Options{AutoReady: true}
}

// Child is one process's link to its allexmaster. Its methods are safe for
// concurrent use.
type Child struct {
	log        hclog.Logger
	env        Env
	pid        int
	socketPath string
	autoReady  bool
	standalone bool
	startedAt  time.Time

	// lifetime is cancelled by Close; it bounds calls the library makes on
	// its own (automatic readiness).
	lifetime context.Context
	cancel   context.CancelFunc

	shutdownCh chan struct{}

	mu        sync.Mutex
	started   bool
	closed    bool
	listened  map[string]bool
	readySent bool
	healthy   bool
	healthMsg string
	grace     time.Duration
	procLn    net.Listener
	procSrv   *grpc.Server
	serveDone chan struct{}
	conn      *grpc.ClientConn
	master    allexv1.MachineManagerClient
}

// New checks the options and builds a Child; nothing is opened until Start.
func New(opts Options) (*Child, error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	var env Env
	if opts.Env != nil {
		env = cloneEnv(*opts.Env)
		if env.Instance == "" {
			return nil, fmt.Errorf("child: Options.Env: instance is empty")
		}
		for proto, port := range env.Ports {
			if _, err := protocolEnum(proto); err != nil {
				return nil, fmt.Errorf("child: Options.Env.Ports: %w", err)
			}
			if port == 0 {
				return nil, fmt.Errorf("child: Options.Env.Ports: %s port is 0", proto)
			}
		}
	} else {
		var err error
		if env, err = EnvFromEnviron(os.Environ()); err != nil {
			return nil, fmt.Errorf("child: environment: %w", err)
		}
	}
	dir := opts.SocketDir
	if dir == "" {
		dir = defaultSocketDir()
	}
	pid := os.Getpid()
	ctx, cancel := context.WithCancel(context.Background())
	return &Child{
		log:        log.Named("child"),
		env:        env,
		pid:        pid,
		socketPath: filepath.Join(dir, "allexprocess."+strconv.Itoa(pid)),
		autoReady:  opts.AutoReady,
		standalone: opts.AllowStandalone,
		startedAt:  time.Now(),
		lifetime:   ctx,
		cancel:     cancel,
		shutdownCh: make(chan struct{}),
		listened:   make(map[string]bool),
		healthy:    true,
	}, nil
}

func defaultSocketDir() string {
	if runtime.GOOS == "windows" {
		return os.TempDir()
	}
	return "/tmp"
}

func cloneEnv(e Env) Env {
	out := e
	out.Ports = make(map[string]uint16, len(e.Ports))
	for k, v := range e.Ports {
		out.Ports[k] = v
	}
	out.Properties = make(map[string]string, len(e.Properties))
	for k, v := range e.Properties {
		out.Properties[k] = v
	}
	return out
}

// Env returns a copy of what the child was told by its master.
func (c *Child) Env() Env { return cloneEnv(c.env) }

// SocketPath is where the child serves allex.v1.Process.
func (c *Child) SocketPath() string { return c.socketPath }

// Start serves allex.v1.Process on <SocketDir>/allexprocess.<pid> and
// registers with the master. A stale socket file left by a dead process with
// the same pid is replaced; a live one is not touched and is an error.
//
// When the master is not configured or does not answer, Start returns an
// error wrapping ErrNoMaster but keeps serving the Process socket, so the
// caller may go on standalone (or Close). With Options.AllowStandalone that
// case is logged and Start returns nil.
func (c *Child) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("child: Start after Close")
	}
	if c.started {
		c.mu.Unlock()
		return errors.New("child: Start called twice")
	}
	c.started = true
	c.mu.Unlock()

	ln, err := listenProcessSocket(ctx, c.socketPath)
	if err != nil {
		return fmt.Errorf("child: %w", err)
	}
	srv := grpc.NewServer()
	allexv1.RegisterProcessServer(srv, &processServer{c: c})
	done := make(chan struct{})
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = ln.Close()
		return errors.New("child: closed during Start")
	}
	c.procLn, c.procSrv, c.serveDone = ln, srv, done
	c.mu.Unlock()
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil {
			c.log.Error("process socket stopped serving", "path", c.socketPath, "error", err)
		}
	}()
	c.log.Debug("serving allex.v1.Process", "path", c.socketPath)

	if err := c.register(ctx); err != nil {
		if c.standalone && errors.Is(err, ErrNoMaster) {
			c.log.Warn("running standalone", "error", err)
			return nil
		}
		return err
	}
	return c.maybeAutoReady(ctx)
}

// register connects to the master and announces this process.
func (c *Child) register(ctx context.Context) error {
	path := c.env.MasterSocket
	if path == "" {
		return fmt.Errorf("child: %s is not set (not started by allexmaster?): %w", EnvMasterSocket, ErrNoMaster)
	}
	conn, err := dialMaster(path)
	if err != nil {
		return fmt.Errorf("child: master socket %s: %v: %w", path, err, ErrNoMaster)
	}
	client := allexv1.NewMachineManagerClient(conn)
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	_, err = client.Register(ctx, &allexv1.RegisterRequest{
		Instance:      c.env.Instance,
		Pid:           int32(c.pid),
		ProcessSocket: c.socketPath,
	})
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("child: register with master at %s: %w", path, wrapMasterErr(err))
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = conn.Close()
		return errors.New("child: closed during Start")
	}
	c.conn, c.master = conn, client
	c.mu.Unlock()
	c.log.Debug("registered with master", "socket", path, "instance", c.env.Instance, "pid", c.pid)
	return nil
}

// listenProcessSocket listens on path, first removing a socket file there
// that nobody answers on: pids are reused, and a child killed with SIGKILL
// leaves its socket behind.
func listenProcessSocket(ctx context.Context, path string) (net.Listener, error) {
	// The kernel's limit (sun_path, 108 bytes on Linux, 104 on BSDs) would
	// otherwise surface as a bare "invalid argument".
	if len(path) >= maxSocketPath {
		return nil, fmt.Errorf("process socket path %q is %d bytes; unix socket paths must be shorter than %d (use a shorter SocketDir)", path, len(path), maxSocketPath)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 && runtime.GOOS != "windows" {
			return nil, fmt.Errorf("process socket %s exists and is not a socket; refusing to remove it", path)
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		var d net.Dialer
		conn, derr := d.DialContext(pctx, "unix", path)
		cancel()
		if derr == nil {
			_ = conn.Close()
			return nil, fmt.Errorf("process socket %s is in use by a live process", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale process socket: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("process socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on process socket: %w", err)
	}
	// Owner and group only: the master runs as the same user, and Shutdown
	// must not be callable by everyone on the machine.
	if err := os.Chmod(path, 0o660); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("chmod process socket: %w", err)
	}
	return ln, nil
}

// Close stops serving allex.v1.Process, removes its socket file and closes
// the master connection. It is safe to call more than once.
func (c *Child) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	srv, ln, done, conn := c.procSrv, c.procLn, c.serveDone, c.conn
	c.conn, c.master = nil, nil
	c.mu.Unlock()
	c.cancel()

	var errs []error
	if srv != nil {
		stopped := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(stopped)
		}()
		timer := time.NewTimer(drainTimeout)
		select {
		case <-stopped:
		case <-timer.C:
			srv.Stop()
			<-stopped
		}
		timer.Stop()
		<-done
	}
	if ln != nil {
		// Serve closed the listener, which unlinks the socket; removing again
		// covers listeners that were never served.
		if err := os.Remove(c.socketPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove process socket: %w", err))
		}
	}
	if conn != nil {
		if err := conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close master connection: %w", err))
		}
	}
	return errors.Join(errs...)
}
