//go:build linux

package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/allex-go/allex/internal/procfs"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanwire"
)

// allexSystem runs a real allexlanmanager and one allexmaster, and starts
// services by adding LAN needs through the admin API.
type allexSystem struct {
	master, lanManager string
}

func (*allexSystem) name() string { return "allex" }

func (a *allexSystem) prepare(ctx context.Context, o *options) (string, error) {
	a.master = filepath.Join(o.work, "allexmaster")
	a.lanManager = filepath.Join(o.work, "allexlanmanager")
	if err := goBuild(ctx, o, a.master, "./cmd/allexmaster"); err != nil {
		return "", err
	}
	if err := goBuild(ctx, o, a.lanManager, "./cmd/allexlanmanager"); err != nil {
		return "", err
	}
	rev, err := run(ctx, 10*time.Second, nil, "git", "-C", o.repo, "rev-parse", "--short", "HEAD")
	if err != nil {
		return "dev", nil
	}
	return "dev@" + strings.TrimSpace(rev), nil
}

const (
	allexModule  = "tiny"
	allexMachine = "bench"
	allexToken   = "bench-token"
)

type allexInstance struct {
	lm, master *proc
	client     *adminclient.Client
	base, size int
	accepted   time.Duration // the accept pass's time

	stopWatch context.CancelFunc
	watchDone chan error
	events    chan adminapi.ServiceEvent
	up        map[string]lanwire.ServiceRecord

	// Where kill-to-replacement time goes, from the service records'
	// timestamps (same host clock): kill to the new child's spawn, spawn
	// to publication, publication to the watch event.
	spawned, published, watched []time.Duration
	republished                 []time.Duration
	startNotes                  []string
}

// lastKillNote says when the last kill's replacement was spawned, by the
// master's clock (the same host clock as the bench's): what comes before
// is the master's (and the dying child's) part, what comes after the
// exec, the child's start and the prober's.
func (in *allexInstance) lastKillNote() string {
	if len(in.spawned) == 0 {
		return ""
	}
	return fmt.Sprintf("spawned at %.1f ms", ms(in.spawned[len(in.spawned)-1]))
}

func (in *allexInstance) notes() []string {
	if len(in.spawned) == 0 {
		return in.startNotes
	}
	f := func(ds []time.Duration) string {
		return fmt.Sprintf("%.1f/%.1f", ms(percentile(ds, 50)), ms(percentile(ds, 99)))
	}
	return append(in.startNotes, fmt.Sprintf("allex kill -9 breakdown, p50/p99 ms: kill → replacement spawned %s "+
		"(master notices the exit, reports the service down and restarts the child on the same ports); "+
		"spawned → published %s (master readiness poll of the port, the restart's reports held until 5 ms after the spawn, the LAN manager's own port check); "+
		"published → watch event seen %s",
		f(in.spawned), f(in.published), f(in.watched)))
}

// launch times a start of n services twice, each with one observer: the
// TCP prober on a first pair of daemons (the "all accept TCP" row; the
// pair is then stopped), the LAN manager's watch stream on a second (the
// headline, every service published), which stays for the kills. The
// prober connects to every port and reads its pid, a TCP handshake and
// teardown per service squeezed into allex's start: run alongside the
// watch it took a share of the machine's CPU during the start and slowed
// the publication it was not needed for.
func (a *allexSystem) launch(ctx context.Context, o *options, n int) (_ instance, _ timing, err error) {
	acc, _, err := a.launchPass(ctx, o, n, true)
	if err != nil {
		return nil, timing{}, fmt.Errorf("accept pass: %w", err)
	}
	ports := acc.ports()
	addrs := make([]string, len(ports))
	for i, p := range ports {
		addrs[i] = addr(p)
	}
	if err := errors.Join(acc.stop(), waitNoneAccept(addrs, 30*time.Second)); err != nil {
		return nil, timing{}, fmt.Errorf("accept pass: %w", err)
	}
	in, t, err := a.launchPass(ctx, o, n, false)
	if err != nil {
		return nil, timing{}, err
	}
	t.accept = acc.accepted
	return in, t, nil
}

// launchPass starts the daemons and n services, timed by the prober
// (accept) or by the watch stream.
func (a *allexSystem) launchPass(ctx context.Context, o *options, n int, accept bool) (_ *allexInstance, _ timing, err error) {
	dir, err := os.MkdirTemp(o.work, "allex")
	if err != nil {
		return nil, timing{}, fmt.Errorf("allex dir: %w", err)
	}
	in := &allexInstance{up: map[string]lanwire.ServiceRecord{}, events: make(chan adminapi.ServiceEvent, 4*n+64)}
	defer func() {
		if err != nil {
			err = errors.Join(err, in.stop())
		}
	}()
	lmPort, err := freeBlock(1)
	if err != nil {
		return nil, timing{}, err
	}
	// A short heartbeat as in allexmaster -dev; memory store: the bench
	// times supervision, not the disk.
	in.lm, err = startProc("allexlanmanager", dir, filepath.Join(dir, "lanmanager.log"), nil, a.lanManager,
		// Kill rounds may hit one service many times (small -n): measure
		// raw recovery, as the peers are set up to (no restart delay).
		"-crashloop-limit", "-1",
		"-addr", addr(lmPort), "-data", filepath.Join(dir, "lm"), "-token", allexToken, "-store", "memory",
		"-heartbeat", "1s", "-log-level", "warn")
	if err != nil {
		return nil, timing{}, err
	}
	// It speaks TLS, as by default: the admin client checks it by the CA
	// it makes in its data dir on first start, and the master joins with
	// a master token made through the admin API (as `allexlanmanager
	// token create` does), then links with its certificate.
	caFile := filepath.Join(dir, "lm", "tls", "ca.crt")
	if err := pollUntil(ctx, 30*time.Second, in.lm, func() error {
		if in.client == nil {
			b, err := os.ReadFile(caFile)
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(b) {
				return fmt.Errorf("%s: no certificate", caFile)
			}
			in.client = adminclient.New("https://"+addr(lmPort), allexToken).WithCA(pool)
		}
		_, err := in.client.Machines(ctx)
		return err
	}); err != nil {
		return nil, timing{}, fmt.Errorf("LAN manager not answering: %w\n%s", err, in.lm.tail())
	}
	joinToken, err := in.client.CreateToken(ctx, adminapi.RoleMaster, time.Hour, "bench master")
	if err != nil {
		return nil, timing{}, fmt.Errorf("master token: %w", err)
	}

	in.size = max(600, n+100)
	if in.base, err = freeBlock(3 * in.size); err != nil {
		return nil, timing{}, err
	}
	cfg := map[string]any{
		"lanmanageraddress": "127.0.0.1",
		"lanmanagerport":    lmPort,
		"token":             joinToken.Token,
		"machineid":         allexMachine,
		"portrangestart":    map[string]int{"tcp": in.base, "http": in.base + in.size, "ws": in.base + 2*in.size},
		"portrangesize":     in.size,
		"socket":            filepath.Join(dir, "m.sock"),
		"statedir":          filepath.Join(dir, "state"),
		"modules": map[string]any{
			allexModule: map[string]any{"command": o.tinysrv, "protocols": []string{"tcp"}, "readiness": "ports"},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, timing{}, fmt.Errorf("master config: %w", err)
	}
	cfgPath := filepath.Join(dir, "allexmasterconfig.json")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return nil, timing{}, fmt.Errorf("master config: %w", err)
	}
	in.master, err = startProc("allexmaster", dir, filepath.Join(dir, "master.log"), nil, a.master,
		"-config", cfgPath, "-log-level", "warn")
	if err != nil {
		return nil, timing{}, err
	}
	if err := pollUntil(ctx, 60*time.Second, in.master, func() error {
		ms, err := in.client.Machines(ctx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.ID == allexMachine && m.Connected {
				return nil
			}
		}
		return errors.New("master not linked yet")
	}); err != nil {
		return nil, timing{}, fmt.Errorf("%w\n%s", err, in.master.tail())
	}

	if accept {
		in.accepted, err = in.timeAccept(ctx, n)
		return in, timing{}, err
	}
	wctx, cancel := context.WithCancel(ctx)
	in.stopWatch, in.watchDone = cancel, make(chan error, 1)
	go func() {
		in.watchDone <- in.client.Watch(wctx, allexModule, func(ev adminapi.ServiceEvent) error {
			select {
			case in.events <- ev:
				return nil
			case <-wctx.Done():
				return wctx.Err()
			}
		})
		close(in.events)
	}()

	t, err := in.startServices(ctx, n)
	return in, t, err
}

// timeAccept adds n needs and times until the first n ports of the
// master's TCP range accept: the port office hands out the lowest free
// ports of the range, which was free when chosen.
func (in *allexInstance) timeAccept(ctx context.Context, n int) (time.Duration, error) {
	firstAddrs := make([]string, n)
	for i := range firstAddrs {
		firstAddrs[i] = addr(in.base + i)
	}
	start := time.Now()
	if err := in.addNeeds(ctx, n); err != nil {
		return 0, err
	}
	return waitAllAccept(ctx, firstAddrs, start, 5*time.Minute)
}

// startServices adds n needs and times until all are published.
func (in *allexInstance) startServices(ctx context.Context, n int) (timing, error) {
	var t timing
	// CPU each daemon burns during the start says which one limits it.
	masterCPU, _ := procfs.CPUTicks(in.master.pid())
	lmCPU, _ := procfs.CPUTicks(in.lm.pid())
	start := time.Now()
	addErr := make(chan error, 1)
	go func() { addErr <- in.addNeeds(ctx, n) }()
	deadline := time.NewTimer(5 * time.Minute)
	defer deadline.Stop()
	for len(in.up) < n {
		select {
		case err := <-addErr:
			if err != nil {
				return t, err
			}
		case ev, ok := <-in.events:
			if !ok {
				return t, fmt.Errorf("watch ended: %w", <-in.watchDone)
			}
			in.apply(ev)
		case <-deadline.C:
			return t, fmt.Errorf("%d of %d services published after 5m\n%s", len(in.up), n, in.master.tail())
		case <-ctx.Done():
			return t, ctx.Err()
		}
	}
	t.ready = time.Since(start)
	masterCPU2, _ := procfs.CPUTicks(in.master.pid())
	lmCPU2, _ := procfs.CPUTicks(in.lm.pid())
	var spawned, published []time.Duration
	for _, rec := range in.up {
		spawned = append(spawned, rec.StartedAt.Sub(start))
		published = append(published, rec.PublishedAt.Sub(rec.StartedAt))
	}
	in.startNotes = append(in.startNotes, fmt.Sprintf("allex start N=%d breakdown, p50/max ms: start → child spawned %.0f/%.0f; "+
		"spawned → published %.0f/%.0f; CPU used meanwhile: allexmaster %.2fs, allexlanmanager %.2fs", n,
		ms(percentile(spawned, 50)), ms(percentile(spawned, 100)), ms(percentile(published, 50)), ms(percentile(published, 100)),
		float64(masterCPU2-masterCPU)/procfs.ClockTicks, float64(lmCPU2-lmCPU)/procfs.ClockTicks))
	for inst, rec := range in.up {
		if p := int(rec.Ports["tcp"]); p < in.base || p >= in.base+n {
			return t, fmt.Errorf("published %s on port %d, outside the first %d ports of the range from %d", inst, p, n, in.base)
		}
	}
	for inst, rec := range in.up {
		a := net.JoinHostPort(rec.Address, strconv.Itoa(int(rec.Ports["tcp"])))
		pid, err := readPID(a)
		if err != nil {
			return t, fmt.Errorf("published %s at %s does not answer: %w", inst, a, err)
		}
		if pid != rec.PID {
			return t, fmt.Errorf("published %s at %s is pid %d, but pid %d answers there", inst, a, rec.PID, pid)
		}
	}
	return t, nil
}

// addNeeds adds the n needs in one request, the way pm2 start takes an
// ecosystem file and supervisorctl start all takes every program.
func (in *allexInstance) addNeeds(ctx context.Context, n int) error {
	needs := make([]lanwire.Need, n)
	for i := range needs {
		needs[i] = lanwire.Need{Instance: allexInstanceName(i), Module: allexModule, Protocols: []string{"tcp"}}
	}
	if err := in.client.AddNeeds(ctx, needs); err != nil {
		return fmt.Errorf("add %d needs: %w", n, err)
	}
	return nil
}

func allexInstanceName(i int) string { return "tiny" + strconv.Itoa(i) }

func (in *allexInstance) apply(ev adminapi.ServiceEvent) {
	switch ev.Type {
	case adminapi.EventUp:
		in.up[ev.Service.Instance] = ev.Service
	case adminapi.EventDown:
		if cur, ok := in.up[ev.Service.Instance]; ok && cur.PID == ev.Service.PID {
			delete(in.up, ev.Service.Instance)
		}
	}
}

// kill kill -9's the child of service i and times until a replacement
// accepts TCP on the service's address with a new pid, as for the peers;
// it also waits until the LAN manager has published the replacement and
// records that time apart (republished).
func (in *allexInstance) kill(ctx context.Context, pr *prober, i int) (time.Duration, error) {
	name := allexInstanceName(i)
	rec, ok := in.up[name]
	if !ok {
		return 0, fmt.Errorf("%s is not published", name)
	}
	old := rec.PID
	oldAddr := net.JoinHostPort(rec.Address, strconv.Itoa(int(rec.Ports["tcp"])))
	actx, stopAccept := context.WithCancel(ctx)
	defer stopAccept()
	start, err := killWait(old, time.Minute)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	// The master restarts the child on the same ports; should the need
	// move elsewhere instead, the published address is polled below.
	acceptCh := probeAsync(func() (time.Duration, error) {
		_, err := pr.waitNewPID(actx, oldAddr, old, time.Minute)
		return time.Since(start), err
	})
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	var acceptD time.Duration // valid once acceptCh is nil
	for {
		select {
		case a := <-acceptCh:
			// Only ctx ends the probe early here (stopAccept is followed
			// by a return), so any error ends the kill.
			if a.err != nil {
				return 0, a.err
			}
			acceptD, acceptCh = a.d, nil
			continue
		case ev, ok := <-in.events:
			if !ok {
				return 0, fmt.Errorf("watch ended: %w", <-in.watchDone)
			}
			in.apply(ev)
			if ev.Type != adminapi.EventUp || ev.Service.Instance != name || ev.Service.PID == old {
				continue
			}
			seen := time.Now()
			in.republished = append(in.republished, seen.Sub(start))
			in.spawned = append(in.spawned, ev.Service.StartedAt.Sub(start))
			in.published = append(in.published, ev.Service.PublishedAt.Sub(ev.Service.StartedAt))
			in.watched = append(in.watched, seen.Sub(ev.Service.PublishedAt))
			addr := net.JoinHostPort(ev.Service.Address, strconv.Itoa(int(ev.Service.Ports["tcp"])))
			if addr != oldAddr {
				stopAccept()
				if _, err := pr.waitNewPID(ctx, addr, old, 30*time.Second); err != nil {
					return 0, err
				}
				return time.Since(start), nil
			}
			if acceptCh != nil {
				a := <-acceptCh
				if a.err != nil {
					return 0, a.err
				}
				acceptD = a.d
			}
			return acceptD, nil
		case <-deadline.C:
			return 0, fmt.Errorf("%s (pid %d) not published again within 1m\n%s", name, old, in.master.tail())
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// probed is how long a probe took, or why it failed.
type probed struct {
	d   time.Duration
	err error
}

// probeAsync runs probe in the background; its result arrives on the
// channel returned.
func probeAsync(probe func() (time.Duration, error)) <-chan probed {
	ch := make(chan probed, 1)
	go func() {
		d, err := probe()
		ch <- probed{d, err}
	}()
	return ch
}

// republishedKills are the kill → published-again times of the kills.
func (in *allexInstance) republishedKills() []time.Duration { return in.republished }

func (in *allexInstance) pids() []namedPID {
	out := []namedPID{{"allexmaster", in.master.pid(), true}}
	// The keeper, the children's parent, is the master's child.
	if k := childNamed(in.master.pid(), "allexkeeper"); k > 0 {
		out = append(out, namedPID{"allexkeeper", k, true})
	}
	return append(out, namedPID{"allexlanmanager", in.lm.pid(), false})
}

// childNamed returns the pid of parent's child whose process name is
// name, or 0.
func childNamed(parent int, name string) int {
	pids, err := procfs.Pids()
	if err != nil {
		return 0
	}
	for _, pid := range pids {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != name {
			continue
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:])); len(f) > 1 && f[1] == strconv.Itoa(parent) {
				return pid
			}
		}
	}
	return 0
}

func (in *allexInstance) ports() []int {
	ps := make([]int, in.size)
	for i := range ps {
		ps[i] = in.base + i
	}
	return ps
}

// stop stops the master first so it stops its children, then the LAN
// manager.
func (in *allexInstance) stop() error {
	if in.stopWatch != nil {
		in.stopWatch()
		for range in.events {
		}
	}
	err := in.master.stop(60 * time.Second)
	return errors.Join(err, in.lm.stop(15*time.Second))
}

// pollUntil calls fn until it succeeds, p exits or timeout passes.
func pollUntil(ctx context.Context, timeout time.Duration, p *proc, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited: %v", p.name, p.err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
