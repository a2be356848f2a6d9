package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/allex-go/allex/agent/config"
	"github.com/allex-go/allex/agent/logfile"
	"github.com/allex-go/allex/agent/modspec"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/version"
)

// Bounds of one call: plain queries, and stops that wait for a child's
// graceful exit. Streams (logs -f, events) run until interrupted.
const (
	callTimeout = 30 * time.Second
	stopTimeout = 2 * time.Minute
)

// connect dials the master, telling plainly when none runs, and bounds
// the call by timeout (0: until ctx ends). done closes both.
func (g *globals) connect(ctx context.Context, timeout time.Duration) (allexv1.MachineManagerClient, context.Context, func(), error) {
	if !strings.HasPrefix(g.socket, `\\`) {
		if _, err := os.Stat(g.socket); errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil, fmt.Errorf("no allexmaster is running: %s does not exist (start one with `allexmaster`, or pass -socket)", g.socket)
		}
	}
	// "unix://rel.sock" would read rel.sock as an authority; "unix:" takes
	// a path relative to the working directory.
	target := "unix://" + g.socket
	if !filepath.IsAbs(g.socket) && !strings.HasPrefix(g.socket, `\\`) {
		target = "unix:" + g.socket
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect to %s: %w", g.socket, err)
	}
	cancel := context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	return allexv1.NewMachineManagerClient(conn), ctx, func() { cancel(); conn.Close() }, nil
}

// rpcErr turns gRPC errors into sentences.
func (g *globals) rpcErr(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		if strings.Contains(st.Message(), "permission denied") {
			return fmt.Errorf("allexmaster on %s: permission denied: the socket (mode 0660) admits the master's user and its group; "+
				"run as one of them, or ask for your group in the master's \"socketgroup\"", g.socket)
		}
		return fmt.Errorf("allexmaster on %s is unavailable: %s", g.socket, st.Message())
	case codes.FailedPrecondition:
		return errors.New(st.Message()) // a sentence saying what to do instead
	}
	return fmt.Errorf("%s: %s", strings.ToLower(st.Code().String()), st.Message())
}

func (g *globals) printProto(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(g.stdout, string(b))
	return err
}

func (g *globals) table() *tabwriter.Writer {
	return tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
}

func (g *globals) status(ctx context.Context, args []string) error {
	fs := g.subFlags("status")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, ctx, done, err := g.connect(ctx, callTimeout)
	if err != nil {
		return err
	}
	defer done()
	st, err := c.Status(ctx, &allexv1.StatusRequest{})
	if err != nil {
		return g.rpcErr(err)
	}
	if g.output == "json" {
		return g.printProto(st)
	}
	tw := g.table()
	fmt.Fprintf(tw, "machine\t%s\n", st.GetMachineId())
	fmt.Fprintf(tw, "version\t%s\n", st.GetVersion())
	fmt.Fprintf(tw, "pid\t%d\n", st.GetPid())
	fmt.Fprintf(tw, "socket\t%s\n", st.GetSocket())
	fmt.Fprintf(tw, "up since\t%s (%s)\n", st.GetStartedAt().AsTime().Local().Format(time.RFC3339), time.Since(st.GetStartedAt().AsTime()).Round(time.Second))
	lan := st.GetLanManagerAddress()
	if lan == "" {
		lan = "(none)"
	}
	fmt.Fprintf(tw, "LAN manager\t%s (%s)\n", lan, st.GetLanLinkState())
	fmt.Fprintf(tw, "processes\t%d (%d ready)\n", st.GetProcesses(), st.GetReady())
	for _, r := range st.GetPortRanges() {
		fmt.Fprintf(tw, "%s ports\t%d-%d, %d in use\n", modspec.ProtocolName(r.GetProtocol()), r.GetRangeStart(), r.GetRangeEnd(), r.GetInUse())
	}
	return tw.Flush()
}

// versionTimeout bounds asking the master its version: the answer is
// only a part of what version prints.
const versionTimeout = 5 * time.Second

// version prints allexctl's version and the master's, or why the master
// did not say.
func (g *globals) version(ctx context.Context, args []string) error {
	fs := g.subFlags("version")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("version: takes no arguments")
	}
	out := struct {
		Allexctl    string `json:"allexctl"`
		Allexmaster string `json:"allexmaster,omitempty"`
		Socket      string `json:"socket"`
		Error       string `json:"error,omitempty"`
	}{Allexctl: version.String(), Socket: g.socket}
	if c, cctx, done, err := g.connect(ctx, versionTimeout); err != nil {
		out.Error = err.Error()
	} else {
		st, err := c.Status(cctx, &allexv1.StatusRequest{})
		done()
		if err != nil {
			out.Error = g.rpcErr(err).Error()
		}
		out.Allexmaster = st.GetVersion()
	}
	if g.output == "json" {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := g.table()
	fmt.Fprintf(tw, "allexctl\t%s\n", out.Allexctl)
	if out.Error != "" {
		fmt.Fprintf(tw, "allexmaster\t- (%s)\n", out.Error)
	} else {
		fmt.Fprintf(tw, "allexmaster\t%s (%s)\n", out.Allexmaster, out.Socket)
	}
	return tw.Flush()
}

func shortState(s allexv1.ProcessState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "PROCESS_STATE_"))
}

func portsText(ps []*allexv1.PortAssignment) string {
	var parts []string
	for _, p := range ps {
		s := fmt.Sprintf("%s=%d", modspec.ProtocolName(p.GetProtocol()), p.GetPort())
		if p.GetExtra() {
			s += "+"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func (g *globals) ps(ctx context.Context, args []string) error {
	fs := g.subFlags("ps")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, ctx, done, err := g.connect(ctx, callTimeout)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.ListProcesses(ctx, &allexv1.ListProcessesRequest{})
	if err != nil {
		return g.rpcErr(err)
	}
	if g.output == "json" {
		return g.printProto(resp)
	}
	tw := g.table()
	fmt.Fprintln(tw, "INSTANCE\tMODULE\tPID\tSTATE\tUPTIME\tRESTARTS\tPORTS\tNEED\tLAST ERROR")
	for _, p := range resp.GetProcesses() {
		uptime := "-"
		if p.GetPid() > 0 && p.GetStartedAt() != nil {
			uptime = time.Since(p.GetStartedAt().AsTime()).Round(time.Second).String()
		}
		pid := "-"
		if p.GetPid() > 0 {
			pid = strconv.Itoa(int(p.GetPid()))
		}
		need := p.GetNeedId()
		if need == "" {
			need = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.GetInstance(), p.GetModule(), pid, shortState(p.GetState()), uptime, p.GetRestarts(), portsText(p.GetPorts()), need, p.GetLastError())
	}
	return tw.Flush()
}

func (g *globals) ports(ctx context.Context, args []string) error {
	fs := g.subFlags("ports")
	module := fs.String("module", "", "all instances of this module")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return errors.New("ports: at most one INSTANCE")
	}
	c, ctx, done, err := g.connect(ctx, callTimeout)
	if err != nil {
		return err
	}
	defer done()
	var instances []*allexv1.InstancePorts
	if fs.NArg() == 1 || *module != "" {
		resp, err := c.GetPorts(ctx, &allexv1.GetPortsRequest{Instance: fs.Arg(0), Module: *module})
		if err != nil {
			return g.rpcErr(err)
		}
		instances = resp.GetInstances()
	} else {
		resp, err := c.ListProcesses(ctx, &allexv1.ListProcessesRequest{})
		if err != nil {
			return g.rpcErr(err)
		}
		for _, p := range resp.GetProcesses() {
			if len(p.GetPorts()) > 0 {
				instances = append(instances, &allexv1.InstancePorts{Instance: p.GetInstance(), Module: p.GetModule(), Ports: p.GetPorts()})
			}
		}
	}
	if g.output == "json" {
		return g.printProto(&allexv1.GetPortsResponse{Instances: instances})
	}
	tw := g.table()
	fmt.Fprintln(tw, "INSTANCE\tMODULE\tPROTOCOL\tPORT\tEXTRA")
	for _, in := range instances {
		for _, p := range in.GetPorts() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%v\n", in.GetInstance(), in.GetModule(), modspec.ProtocolName(p.GetProtocol()), p.GetPort(), p.GetExtra())
		}
	}
	return tw.Flush()
}

func (g *globals) start(ctx context.Context, args []string) error {
	fs := g.subFlags("start")
	module := fs.String("module", "", "module name (a configured module, or the name for COMMAND; default: the command's base name)")
	protocols := fs.String("protocols", "", "comma-separated protocols to assign ports for: tcp,http,ws")
	dir := fs.String("dir", "", "working directory")
	restart := fs.String("restart", "", "restart policy: never, on-failure or always")
	readiness := fs.String("readiness", "", "readiness: none, ports or sdk")
	stopTimeout := fs.Duration("stop-timeout", 0, "grace period before SIGKILL")
	startTimeout := fs.Duration("start-timeout", 0, "time allowed to become ready")
	logMaxSize := fs.String("log-max-size", "", `size at which stdout and stderr logs rotate, e.g. "10MiB" (default: the master's)`)
	logMaxFiles := fs.Int("log-max-files", 0, "files kept per log stream, the live one included (default: the master's)")
	env, fixed, props := kv{}, kv{}, kv{}
	fs.Var(env, "env", "KEY=VALUE environment (repeatable)")
	fs.Var(fixed, "fixed", "PROTOCOL=PORT fixed port (repeatable)")
	fs.Var(props, "property", "KEY=VALUE module property (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return errors.New("start: INSTANCE is required")
	}
	spec := &allexv1.ModuleSpec{Instance: fs.Arg(0), Module: *module, Dir: *dir, Env: env, Properties: props}
	rest := fs.Args()[1:]
	// flag stops at INSTANCE, so the "--" before COMMAND is still there.
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	if len(rest) > 0 {
		spec.Command, spec.Args = rest[0], rest[1:]
		if spec.Module == "" {
			spec.Module = filepath.Base(rest[0])
		}
	} else if spec.Module == "" {
		return errors.New("start: give -module (a module configured on the master) or a command after --")
	}
	if *protocols != "" {
		for _, name := range strings.Split(*protocols, ",") {
			p, err := modspec.ProtocolEnum(strings.TrimSpace(name))
			if err != nil {
				return fmt.Errorf("start: -protocols: %w", err)
			}
			spec.Protocols = append(spec.Protocols, p)
		}
	}
	if len(fixed) > 0 {
		spec.FixedPorts = map[string]uint32{}
		for k, v := range fixed {
			port, err := strconv.ParseUint(v, 10, 16)
			if err != nil || port == 0 {
				return fmt.Errorf("start: -fixed %s=%s: want a port 1-65535", k, v)
			}
			spec.FixedPorts[k] = uint32(port)
		}
	}
	var err error
	if spec.Restart, err = modspec.RestartEnum(*restart); err != nil {
		return fmt.Errorf("start: -restart %w", err)
	}
	if spec.Readiness, err = modspec.ReadinessEnum(*readiness); err != nil {
		return fmt.Errorf("start: -readiness %w", err)
	}
	if *stopTimeout > 0 {
		spec.StopTimeout = durationpb.New(*stopTimeout)
	}
	if *startTimeout > 0 {
		spec.StartTimeout = durationpb.New(*startTimeout)
	}
	if *logMaxSize != "" {
		size, err := config.ParseByteSize(*logMaxSize)
		if err == nil {
			err = logfile.CheckSize(int64(size))
		}
		if err != nil {
			return fmt.Errorf("start: -log-max-size: %w", err)
		}
		spec.LogMaxSize = uint64(size)
	}
	if err := logfile.CheckFiles(*logMaxFiles); err != nil {
		return fmt.Errorf("start: -log-max-files: %w", err)
	}
	spec.LogMaxFiles = uint32(*logMaxFiles)
	// The master runs the same check; running it here too names the
	// mistake without a round trip.
	if err := modspec.Validate(spec); err != nil {
		return fmt.Errorf("start: instance %s: %s", spec.GetInstance(), modspec.Describe(err))
	}
	c, ctx, done, err := g.connect(ctx, callTimeout)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.StartProcess(ctx, &allexv1.StartProcessRequest{Spec: spec})
	if err != nil {
		return g.rpcErr(err)
	}
	return g.printProcess(resp.GetProcess())
}

func (g *globals) printProcess(p *allexv1.ProcessInfo) error {
	if g.output == "json" {
		return g.printProto(p)
	}
	_, err := fmt.Fprintf(g.stdout, "%s\t%s\tpid %d\t%s\n", p.GetInstance(), shortState(p.GetState()), p.GetPid(), portsText(p.GetPorts()))
	return err
}

func (g *globals) oneInstance(name string, args []string, extra func(fs *flagSet)) (string, error) {
	fs := g.subFlags(name)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() != 1 {
		return "", fmt.Errorf("%s: exactly one INSTANCE is required", name)
	}
	return fs.Arg(0), nil
}

func (g *globals) stop(ctx context.Context, args []string) error {
	var remove, force *bool
	inst, err := g.oneInstance("stop", args, func(fs *flagSet) {
		remove = fs.Bool("rm", false, "forget the process once stopped")
		force = fs.Bool("force", false, "stop the child of a LAN need too (the LAN manager offers the need again)")
	})
	if err != nil {
		return err
	}
	c, ctx, done, err := g.connect(ctx, stopTimeout)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.StopProcess(ctx, &allexv1.StopProcessRequest{Instance: inst, Remove: *remove, Force: *force})
	if err != nil {
		return g.rpcErr(err)
	}
	return g.printProcess(resp.GetProcess())
}

func (g *globals) restart(ctx context.Context, args []string) error {
	inst, err := g.oneInstance("restart", args, nil)
	if err != nil {
		return err
	}
	c, ctx, done, err := g.connect(ctx, stopTimeout)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.RestartProcess(ctx, &allexv1.RestartProcessRequest{Instance: inst})
	if err != nil {
		return g.rpcErr(err)
	}
	return g.printProcess(resp.GetProcess())
}

func (g *globals) logs(ctx context.Context, args []string) error {
	var follow *bool
	var tail *uint
	var stream *string
	inst, err := g.oneInstance("logs", args, func(fs *flagSet) {
		follow = fs.Bool("f", false, "follow")
		tail = fs.Uint("n", 0, "only the last N lines of each stream (0: all)")
		stream = fs.String("stream", "", "stdout or stderr (default both)")
	})
	if err != nil {
		return err
	}
	req := &allexv1.LogsRequest{Instance: inst, Follow: *follow, TailLines: uint32(*tail)}
	switch *stream {
	case "":
	case "stdout":
		req.Stream = allexv1.LogStream_LOG_STREAM_STDOUT
	case "stderr":
		req.Stream = allexv1.LogStream_LOG_STREAM_STDERR
	default:
		return fmt.Errorf("logs: -stream %q: want stdout or stderr", *stream)
	}
	c, ctx, done, err := g.connect(ctx, 0)
	if err != nil {
		return err
	}
	defer done()
	st, err := c.Logs(ctx, req)
	if err != nil {
		return g.rpcErr(err)
	}
	for {
		msg, err := st.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return g.rpcErr(err)
		}
		out := g.stdout
		if msg.GetStream() == allexv1.LogStream_LOG_STREAM_STDERR && g.output != "json" {
			out = g.stderr
		}
		if g.output == "json" {
			if err := g.printProto(msg); err != nil {
				return err
			}
			continue
		}
		if _, err := out.Write(msg.GetData()); err != nil {
			return err
		}
	}
}

func (g *globals) events(ctx context.Context, args []string) error {
	fs := g.subFlags("events")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, ctx, done, err := g.connect(ctx, 0)
	if err != nil {
		return err
	}
	defer done()
	st, err := c.WatchEvents(ctx, &allexv1.WatchEventsRequest{Instance: fs.Arg(0)})
	if err != nil {
		return g.rpcErr(err)
	}
	for {
		msg, err := st.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return g.rpcErr(err)
		}
		ev := msg.GetEvent()
		if g.output == "json" {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, string(b))
			continue
		}
		kind := strings.ToLower(strings.TrimPrefix(ev.GetKind().String(), "EVENT_KIND_"))
		line := fmt.Sprintf("%s  %-10s %-16s pid %-7d", ev.GetTime().AsTime().Local().Format("15:04:05.000"), kind, ev.GetInstance(), ev.GetPid())
		if ev.GetKind() == allexv1.EventKind_EVENT_KIND_EXITED {
			if ev.GetExitSignal() != "" {
				line += " signal " + ev.GetExitSignal()
			} else {
				line += fmt.Sprintf(" code %d", ev.GetExitCode())
			}
		}
		if ev.GetMessage() != "" {
			line += "  " + ev.GetMessage()
		}
		fmt.Fprintln(g.stdout, strings.TrimRight(line, " "))
	}
}
