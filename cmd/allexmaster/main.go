// Command allexmaster is the machine manager daemon: it supervises this
// machine's children, serves allex.v1.MachineManager on the machine socket
// and satisfies LAN needs through the LAN manager.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/agent"
	"github.com/allex-go/allex/agent/config"
	"github.com/allex-go/allex/agent/statedir"
	"github.com/allex-go/allex/internal/cloexec"
	"github.com/allex-go/allex/internal/logfallback"
	"github.com/allex-go/allex/internal/version"
	"github.com/allex-go/allex/server"
)

func main() {
	// Before anything is started: a descriptor the parent shell left open
	// must not reach the keeper or the children.
	cloexec.Inherited()
	if len(os.Args) > 1 && os.Args[1] == "keeper" {
		runKeeper()
	}
	if len(os.Args) > 1 && os.Args[1] == "demochild" {
		if err := runDemoChild(); err != nil {
			fmt.Fprintln(os.Stderr, "demochild:", err)
			os.Exit(1)
		}
		return
	}
	// A closed stdout or stderr (allexmaster | head) must not kill the
	// master: Go dies of SIGPIPE on fd 1 and 2 unless the signal is
	// notified; the write fails instead and the log moves to the state
	// dir. Notified, not ignored: an ignored signal stays ignored in every
	// process the master starts.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	out := logfallback.New(os.Stderr, "stderr")
	if err := run(os.Args[1:], out); err != nil {
		fmt.Fprintln(out, "allexmaster:", err)
		os.Exit(1)
	}
}

type flags struct {
	config, socket, lanAddr, address, machineID, token, tokenFile, stateDir, logLevel string
	lanPort, maxProcs                                                                 int
	noLAN, lanInsecure, logJSON, dev, version                                         bool
	demo                                                                              devFlags
}

func parseFlags(args []string, stderr io.Writer) (*flags, map[string]bool, error) {
	f := &flags{}
	fs := flag.NewFlagSet("allexmaster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "config", config.FileName, "config file (written with defaults when missing)")
	fs.StringVar(&f.socket, "socket", "", "machine socket path (overrides the config's socket)")
	fs.StringVar(&f.lanAddr, "lanmanager", "", "LAN manager host[:port], or several comma-separated (overrides lanmanageraddress)")
	fs.IntVar(&f.lanPort, "lanmanager-port", 0, "LAN manager port (overrides lanmanagerport)")
	fs.BoolVar(&f.noLAN, "no-lan", false, "run without a LAN manager")
	fs.StringVar(&f.address, "address", "", "IP announced to the LAN manager (overrides address)")
	fs.StringVar(&f.machineID, "machine-id", "", "machine id (overrides machineid)")
	fs.StringVar(&f.token, "token", "", "join token, or the shared LAN token with -lan-insecure (overrides token)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the token (overrides tokenfile)")
	fs.BoolVar(&f.lanInsecure, "lan-insecure", false, "link over plain WebSockets to a LAN manager run with -insecure (overrides laninsecure)")
	fs.StringVar(&f.stateDir, "state-dir", "", "logs and state directory (overrides statedir)")
	fs.IntVar(&f.maxProcs, "max-processes", -1, "most children to run, 0 unlimited (overrides maxprocesses)")
	fs.StringVar(&f.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.BoolVar(&f.logJSON, "log-json", false, "log as JSON lines")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	fs.BoolVar(&f.dev, "dev", false, "development mode: embedded LAN manager on loopback, demo needs, kills and re-satisfies demo services")
	f.demo.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	return f, set, nil
}

func newLogger(f *flags, out io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "allexmaster",
		Level:      hclog.LevelFromString(f.logLevel),
		Output:     out,
		JSONFormat: f.logJSON,
	})
}

func run(args []string, stderr *logfallback.Writer) error {
	f, set, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if f.version {
		fmt.Println("allexmaster", version.String())
		return nil
	}
	log := newLogger(f, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.dev {
		return runDev(ctx, f, set, log, stderr)
	}

	cfgPath, err := filepath.Abs(f.config)
	if err != nil {
		return fmt.Errorf("config path: %w", err)
	}
	cfg, created, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if created {
		log.Info("no config file found; wrote the default one", "path", cfgPath)
	}
	cfg = applyFlags(cfg, f, set)
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s (after flags): %w", cfgPath, err)
	}
	baseDir := filepath.Dir(cfgPath)
	cfg = cfg.WithDefaults(baseDir)
	token, err := cfg.ResolveToken(baseDir)
	if err != nil {
		return fmt.Errorf("%s: %w", cfgPath, err)
	}
	if cfg.LanManagerAddress != "" && token == "" {
		log.Warn("no LAN link token configured (token or tokenfile); the LAN manager will refuse this master")
	}
	return serve(ctx, cfg, token, log, stderr)
}

// applyFlags lets flags that were given override the file.
func applyFlags(cfg config.Config, f *flags, set map[string]bool) config.Config {
	if set["socket"] {
		cfg.Socket = f.socket
	}
	if set["lanmanager"] {
		cfg.LanManagerAddress = f.lanAddr
	}
	if f.noLAN {
		cfg.LanManagerAddress = ""
	}
	if set["lanmanager-port"] {
		cfg.LanManagerPort = f.lanPort
	}
	if set["address"] {
		cfg.Address = f.address
	}
	if set["machine-id"] {
		cfg.MachineID = f.machineID
	}
	if set["token"] {
		cfg.Token, cfg.TokenFile = f.token, ""
	}
	if set["token-file"] {
		cfg.Token, cfg.TokenFile = "", f.tokenFile
	}
	if set["lan-insecure"] {
		cfg.LanInsecure = f.lanInsecure
	}
	if set["state-dir"] {
		cfg.StateDir = f.stateDir
	}
	if set["max-processes"] {
		cfg.MaxProcesses = f.maxProcs
	}
	return cfg
}

// serve runs the agent and its machine socket until ctx is done. The
// state dir and then the socket are taken first, each for the master's
// life: a second master on either refuses to start and touches nothing.
// Once the dir is the master's, its log continues there if out fails.
func serve(ctx context.Context, cfg config.Config, token string, log hclog.Logger, out *logfallback.Writer) error {
	dir, err := statedir.Lock(cfg.StateDir)
	if err != nil {
		return err
	}
	defer dir.Close()
	out.SetFile(filepath.Join(cfg.StateDir, statedir.LogName))
	ln, err := server.Listen(cfg.Socket, cfg.SocketGroup)
	if err != nil {
		return err
	}
	identity, err := dir.Identity()
	if err != nil {
		ln.Close()
		return err
	}
	keeperCmd, err := keeperCommand()
	if err != nil {
		ln.Close()
		return err
	}
	a, err := agent.New(agent.Options{
		Logger:        log,
		Config:        cfg,
		Socket:        cfg.Socket,
		LogDir:        filepath.Join(cfg.StateDir, "logs"),
		StateDir:      cfg.StateDir,
		Token:         token,
		Identity:      identity,
		KeeperCommand: keeperCmd,
		Version:       version.String(),
	})
	if err != nil {
		ln.Close()
		return err
	}
	srv := server.New(a, log.Named("server"))
	go func() {
		select {
		case <-a.Ready():
			log.Info("allexmaster running", "version", version.String(), "socket", cfg.Socket, "machine", cfg.MachineID, "identity", identity[:8], "lanmanager", cfg.LanManagerAddress, "statedir", cfg.StateDir, "pid", os.Getpid())
		case <-ctx.Done():
		}
	}()

	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrv()
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(srvCtx, ln) }()

	// The socket stays up while children stop, so they can still talk to
	// the master during their graceful shutdown.
	agentErr := a.Run(ctx)
	stopSrv()
	srvErr := <-srvDone
	ln.Close()
	log.Info("allexmaster stopped")
	return errors.Join(agentErr, srvErr)
}
