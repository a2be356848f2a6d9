package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/agent/config"
	"github.com/allex-go/allex/agent/statedir"
	"github.com/allex-go/allex/internal/logfallback"
	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// devFlags tune the -dev demonstration.
type devFlags struct {
	lanAddr  string
	needs    int
	kills    int
	interval time.Duration
	exit     bool
}

func (d *devFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.lanAddr, "dev-lan-addr", "127.0.0.1:23552", "-dev: listen address of the embedded LAN manager")
	fs.IntVar(&d.needs, "dev-needs", 3, "-dev: number of demo needs")
	fs.IntVar(&d.kills, "dev-kills", 3, "-dev: demo children to kill -9 (one at a time) once all are published")
	fs.DurationVar(&d.interval, "dev-interval", 3*time.Second, "-dev: pause between kills")
	fs.BoolVar(&d.exit, "dev-exit", false, "-dev: exit once the kills were re-satisfied (for scripts and tests)")
}

// runDev runs a master with an embedded LAN manager on loopback and a demo
// needs set, then kills demo children and shows them re-satisfied.
func runDev(ctx context.Context, f *flags, set map[string]bool, log hclog.Logger, logOut *logfallback.Writer) error {
	if f.demo.needs < 1 || f.demo.needs > 100 {
		return fmt.Errorf("-dev-needs %d: want 1 to 100", f.demo.needs)
	}
	host, _, err := net.SplitHostPort(f.demo.lanAddr)
	if err != nil {
		return fmt.Errorf("-dev-lan-addr: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-dev-lan-addr %s: the embedded LAN manager listens on loopback only", f.demo.lanAddr)
	}
	stateDir := f.stateDir
	if !set["state-dir"] {
		if stateDir, err = os.MkdirTemp("", "allex-dev-"); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable for the demo module: %w", err)
	}
	token, err := randomToken()
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(stateDir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("write token: %w", err)
	}

	lm, err := lanmanager.New(lanmanager.Config{
		Addr:                f.demo.lanAddr,
		Token:               token,
		Store:               store.NewMemory(),
		RetryBackoffInitial: 200 * time.Millisecond,
		RetryBackoffMax:     5 * time.Second,
		Logger:              log.Named("lanmanager"),
	})
	if err != nil {
		return err
	}
	if err := lm.Listen(); err != nil {
		return fmt.Errorf("embedded LAN manager: %w (is another LAN manager running? try -dev-lan-addr 127.0.0.1:0)", err)
	}
	lmAddr := lm.Addr().(*net.TCPAddr)
	lmCtx, stopLM := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLM()
	lmDone := make(chan error, 1)
	go func() { lmDone <- lm.Run(lmCtx) }()

	cfg := config.Default()
	cfg.LanManagerAddress = host
	cfg.LanManagerPort = lmAddr.Port
	cfg.MachineID = "dev"
	cfg.StateDir = stateDir
	cfg.Modules = map[string]config.Module{
		"demo": {
			Command:     self,
			Args:        []string{"demochild"},
			Protocols:   []string{"tcp", "http"},
			Readiness:   "ports",
			StopTimeout: config.Duration(3 * time.Second),
		},
	}
	cfg = applyFlags(cfg, f, set)
	cfg.LanManagerAddress, cfg.LanManagerPort, cfg.Token, cfg.TokenFile = host, lmAddr.Port, token, ""
	// The embedded LAN manager listens on loopback only, in plain HTTP.
	cfg.LanInsecure = true
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("dev config: %w", err)
	}
	cfg = cfg.WithDefaults("")

	// The demo's lines follow the log when stdout is closed (-dev | head).
	out := logfallback.New(os.Stdout, "stdout")
	out.SetFile(filepath.Join(stateDir, statedir.LogName))
	fmt.Fprintf(out, "allex dev: LAN manager on %s, state in %s\n", lmAddr, stateDir)
	fmt.Fprintf(out, "allex dev: try  go run ./cmd/allexctl -socket %s ps\n", cfg.Socket)
	fmt.Fprintf(out, "allex dev:      go run ./cmd/allexctl -lan http://%s -token-file %s services\n", lmAddr, tokenFile)

	demoCtx, stopDemo := context.WithCancel(ctx)
	defer stopDemo()
	var demoErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		demoErr = demo(demoCtx, lm, f.demo, out)
		if f.demo.exit {
			stopDemo()
		}
	}()
	err = serve(demoCtx, cfg, token, log, logOut)
	stopDemo()
	wg.Wait()
	stopLM()
	lmErr := <-lmDone
	switch {
	case set["state-dir"]:
	case logOut.FellBack() || out.FellBack():
		log.Warn("keeping the state dir: the log continued in it", "path", filepath.Join(stateDir, statedir.LogName))
	default:
		os.RemoveAll(stateDir)
	}
	if errors.Is(demoErr, context.Canceled) {
		demoErr = nil
	}
	return errors.Join(err, lmErr, demoErr)
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// demo adds the demo needs, prints service events, and kills published
// demo children one at a time, timing how long each takes to be
// published again.
func demo(ctx context.Context, lm *lanmanager.Server, d devFlags, out io.Writer) error {
	_, events, cancel := lm.Watch("demo")
	defer cancel()
	added := time.Now()
	for i := 1; i <= d.needs; i++ {
		n := lanwire.Need{Instance: "demo" + strconv.Itoa(i), Module: "demo", Protocols: []string{"tcp", "http"}}
		if err := lm.AddNeed(n); err != nil && !errors.Is(err, adminapi.ErrConflict) {
			return fmt.Errorf("add demo need: %w", err)
		}
	}
	fmt.Fprintf(out, "allex dev: added %d demo needs\n", d.needs)
	up := map[string]lanwire.ServiceRecord{}
	wait := func(deadline time.Duration, done func() bool) error {
		timer := time.NewTimer(deadline)
		defer timer.Stop()
		for !done() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
				return errors.New("demo: timed out waiting for services")
			case ev, ok := <-events:
				if !ok {
					return errors.New("demo: LAN manager stopped")
				}
				switch ev.Type {
				case adminapi.EventUp:
					up[ev.Service.Instance] = ev.Service
					fmt.Fprintf(out, "allex dev: published %-8s pid %-7d %s %s\n", ev.Service.Instance, ev.Service.PID, ev.Service.Address, portsString(ev.Service.Ports))
				case adminapi.EventDown:
					delete(up, ev.Service.Instance)
					fmt.Fprintf(out, "allex dev: down      %-8s pid %d\n", ev.Service.Instance, ev.Service.PID)
				}
			}
		}
		return nil
	}
	if err := wait(time.Minute, func() bool { return len(up) == d.needs }); err != nil {
		return err
	}
	fmt.Fprintf(out, "allex dev: all %d demo services published in %s\n", d.needs, time.Since(added).Round(time.Millisecond))
	for k := 0; k < d.kills; k++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d.interval):
		}
		names := make([]string, 0, len(up))
		for n := range up {
			names = append(names, n)
		}
		sort.Strings(names)
		victim := up[names[k%len(names)]]
		fmt.Fprintf(out, "allex dev: kill -9    %-8s pid %d\n", victim.Instance, victim.PID)
		killed := time.Now()
		if err := killProcess(victim.PID); err != nil {
			return fmt.Errorf("kill demo child %d: %w", victim.PID, err)
		}
		if err := wait(time.Minute, func() bool {
			rec, ok := up[victim.Instance]
			return ok && rec.PID != victim.PID
		}); err != nil {
			return err
		}
		fmt.Fprintf(out, "allex dev: re-satisfied %s in %s\n", victim.Instance, time.Since(killed).Round(time.Millisecond))
	}
	if d.kills > 0 {
		fmt.Fprintln(out, "allex dev: demo done; services keep running until Ctrl-C")
	}
	return nil
}

func portsString(p lanwire.Ports) string {
	var parts []string
	for _, proto := range lanwire.Protocols {
		if port, ok := p[proto]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d", proto, port))
		}
	}
	return strings.Join(parts, " ")
}
