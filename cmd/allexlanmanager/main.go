// Command allexlanmanager runs the LAN manager: it holds the needs
// (services that should run on the LAN), the registry of running services,
// and serves masters' WebSocket links and the admin HTTP API on one address.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/allex-go/allex/internal/version"
	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
	"github.com/hashicorp/go-hclog"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "allexlanmanager:", err)
		}
		os.Exit(1)
	}
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "token" {
		return runToken(ctx, args[1:], os.Stdout, stderr)
	}
	fset := flag.NewFlagSet("allexlanmanager", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprintln(stderr, "usage: allexlanmanager [flags]\n       allexlanmanager token create|ls|revoke [flags]   (tokens for masters, admins and readers)\nflags:")
		fset.PrintDefaults()
	}
	var cfg lanmanager.Config
	var needs listFlag
	var tokenFile, logLevel, storeKind string
	fset.StringVar(&cfg.Addr, "addr", lanmanager.DefaultAddr, "listen address (use :23552 to serve the LAN)")
	fset.StringVar(&cfg.DataDir, "data", "./allexlanmanager.d", "data directory (database, generated token)")
	fset.StringVar(&cfg.Token, "token", "", "bearer token masters and admin clients must present")
	fset.StringVar(&tokenFile, "token-file", "", "read the token from this file")
	fset.Var(&needs, "needs", "needs file (repeatable; later files override earlier ones per instance)")
	fset.DurationVar(&cfg.Heartbeat, "heartbeat", lanwire.DefaultHeartbeat, "master ping period; silent links are dropped after 3×")
	fset.DurationVar(&cfg.Lease, "lease", lanwire.DefaultLease, "a master that hears nothing for this long has stopped its LAN children (SIGKILL included); a silent master's needs move after lease + margin")
	fset.DurationVar(&cfg.FenceGrace, "fence-grace", lanwire.DefaultFenceGrace, "a cut-off master starts stopping its LAN children (SIGTERM) this long before its lease ends")
	fset.DurationVar(&cfg.ExitFence, "exit-fence", lanwire.DefaultExitFence, "a master's keeper kills its LAN children within this after the master's process ends; such a master's needs move after exit-fence + margin")
	fset.DurationVar(&cfg.Margin, "margin", lanwire.DefaultMargin, "added to every fence before a lost master's needs move")
	fset.IntVar(&cfg.CrashLoopLimit, "crashloop-limit", 10, "downs of one service within -crashloop-window before its need backs off (-1: never)")
	fset.DurationVar(&cfg.CrashLoopWindow, "crashloop-window", time.Minute, "window of -crashloop-limit")
	fset.IntVar(&cfg.OfferWindow, "offer-window", lanmanager.DefaultOfferWindow, "most needs offered to a master in one needs list")
	fset.IntVar(&cfg.MaxPlacing, "max-placing", lanmanager.DefaultMaxPlacing, "most needs granted and not yet published at once; the others wait, taken from each request in turn (-1: no limit)")
	fset.DurationVar(&cfg.DeclineHold, "decline-hold", lanmanager.DefaultDeclineHold, "a need a master declined is not placed on that master again for this long")
	fset.IntVar(&cfg.MaxUnauthPerIP, "max-unauth-per-ip", lanmanager.DefaultMaxUnauthPerIP, "most connections without the token from one IP address; the oldest waiting one makes room for a new one")
	fset.IntVar(&cfg.MaxUnauth, "max-unauth", lanmanager.DefaultMaxUnauth(), "most connections without the token in all (default: a quarter of the descriptor limit, at most 1024)")
	fset.DurationVar(&cfg.UnauthTimeout, "unauth-timeout", lanmanager.DefaultUnauthTimeout, "a connection without the token is closed after this long waiting for, reading or answering one request")
	fset.DurationVar(&cfg.HelloTimeout, "hello-timeout", lanmanager.DefaultHelloTimeout, "a master's link must say hello within this")
	fset.StringVar(&logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fset.StringVar(&storeKind, "store", "bolt", "bolt (in -data), memory (state lost on exit), or etcd://host:port[,host:port...][/prefix] (shared by several LAN managers, one leading; needs -token or -token-file)")
	leaderTTL := fset.Duration("leader-ttl", 2*time.Second, "with -store etcd: the leader's etcd lease; a standby takes over this long after the leader dies")
	advertise := fset.String("advertise", "", "with -store etcd: the address standbys name as the leader's (default: https://<-addr>, or http:// with -insecure)")
	showVersion := fset.Bool("version", false, "print the version and exit")
	var tf tlsFlags
	tf.register(fset)
	if err := fset.Parse(args); err != nil {
		return err
	}
	if err := tf.check(); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println("allexlanmanager", version.String())
		return nil
	}
	if fset.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fset.Args())
	}
	for name, d := range map[string]time.Duration{"-heartbeat": cfg.Heartbeat, "-lease": cfg.Lease, "-fence-grace": cfg.FenceGrace, "-exit-fence": cfg.ExitFence, "-margin": cfg.Margin,
		"-unauth-timeout": cfg.UnauthTimeout, "-hello-timeout": cfg.HelloTimeout, "-decline-hold": cfg.DeclineHold} {
		if d <= 0 {
			return fmt.Errorf("%s %v: want more than 0", name, d)
		}
	}
	for name, n := range map[string]int{"-max-unauth-per-ip": cfg.MaxUnauthPerIP, "-max-unauth": cfg.MaxUnauth} {
		if n <= 0 {
			return fmt.Errorf("%s %d: want at least 1", name, n)
		}
	}
	if cfg.MaxPlacing == 0 || cfg.MaxPlacing < -1 {
		return fmt.Errorf("-max-placing %d: want at least 1, or -1 for no limit", cfg.MaxPlacing)
	}
	level := hclog.LevelFromString(logLevel)
	if level == hclog.NoLevel {
		return fmt.Errorf("-log-level %q: want trace, debug, info, warn or error", logLevel)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "allexlanmanager", Level: level, Output: stderr})
	cfg.Logger = log
	cfg.NeedsFiles = needs
	var es *etcdStore
	switch {
	case storeKind == "bolt":
	case storeKind == "memory":
		cfg.Store = store.NewMemory()
	case strings.HasPrefix(storeKind, "etcd:"):
		p, err := parseEtcdStore(storeKind)
		if err != nil {
			return err
		}
		if cfg.Token == "" && tokenFile == "" {
			return errors.New("-store etcd: give -token or -token-file, the same to every LAN manager of the LAN")
		}
		if *leaderTTL < time.Second {
			return fmt.Errorf("-leader-ttl %v: want at least 1s (etcd leases count whole seconds)", *leaderTTL)
		}
		es = &p
	default:
		return fmt.Errorf("-store %q: want bolt, memory or etcd://host:port[,...][/prefix]", storeKind)
	}
	tok, err := resolveToken(cfg.Token, tokenFile, cfg.DataDir, log)
	if err != nil {
		return err
	}
	cfg.Token, cfg.CertTTL = tok, tf.certTTL
	if es != nil {
		adv := *advertise
		if adv == "" {
			adv = scheme(tf.insecure) + cfg.Addr
		}
		return runEtcd(ctx, cfg, *es, *leaderTTL, adv, &tf, log)
	}
	st, err := tf.load(ctx, cfg.DataDir, hostsOf(cfg.Addr), nil, log)
	if err != nil {
		return err
	}
	if st != nil {
		cfg.TLS, cfg.CA = st.config(), st.ca
	}
	srv, err := lanmanager.New(cfg)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

func scheme(insecure bool) string {
	if insecure {
		return "http://"
	}
	return "https://"
}

// resolveToken picks -token, else -token-file, else <data>/token,
// generating it on first start so a fresh install is never open.
func resolveToken(token, file, dataDir string, log hclog.Logger) (string, error) {
	if token != "" && file != "" {
		return "", errors.New("give -token or -token-file, not both")
	}
	if token != "" {
		return token, nil
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("-token-file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("-token-file %s is empty", file)
		}
		return t, nil
	}
	path := filepath.Join(dataDir, "token")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("token file %s is empty", path)
		}
		log.Info("using the token in the data directory", "path", path)
		return t, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	t := hex.EncodeToString(raw)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	// O_EXCL: two first starts racing must not overwrite each other's token.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	if _, err := f.WriteString(t + "\n"); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("token: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	log.Info("generated a token; masters and allexctl need it", "path", path)
	return t, nil
}
