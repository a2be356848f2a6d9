//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pm2Version is pinned so results are comparable between runs.
const pm2Version = "7.0.4"

// killByPort kill -9's the tinysrv on port (it tells its pid) and times
// until a different process accepts there.
func killByPort(ctx context.Context, pr *prober, port int) (time.Duration, error) {
	a := addr(port)
	old, err := readPID(a)
	if err != nil {
		return 0, fmt.Errorf("child on %s: %w", a, err)
	}
	start, err := killWait(old, time.Minute)
	if err != nil {
		return 0, err
	}
	if _, err := pr.waitNewPID(ctx, a, old, time.Minute); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func portAddrs(base, n int) ([]int, []string) {
	ports, addrs := make([]int, n), make([]string, n)
	for i := range n {
		ports[i], addrs[i] = base+i, addr(base+i)
	}
	return ports, addrs
}

// pm2System runs PM2 (fork mode, the binary without interpreter) from a
// private PM2_HOME.
type pm2System struct{ bin string }

func (*pm2System) name() string { return "pm2" }

func (p *pm2System) prepare(ctx context.Context, o *options) (string, error) {
	if _, err := exec.LookPath("node"); err != nil {
		return "", errors.New("node is not installed")
	}
	prefix := filepath.Join(o.cache, "pm2")
	p.bin = filepath.Join(prefix, "node_modules", ".bin", "pm2")
	pkg := filepath.Join(prefix, "node_modules", "pm2", "package.json")
	if v, err := packageVersion(pkg); err != nil || v != pm2Version {
		fmt.Fprintf(o.log, "installing pm2@%s into %s\n", pm2Version, prefix)
		if err := os.MkdirAll(prefix, 0o755); err != nil {
			return "", fmt.Errorf("pm2: %w", err)
		}
		if _, err := run(ctx, 10*time.Minute, nil, "npm", "install", "--prefix", prefix, "--no-audit", "--no-fund", "pm2@"+pm2Version); err != nil {
			return "", fmt.Errorf("npm install pm2: %w", err)
		}
	}
	return packageVersion(pkg)
}

func packageVersion(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return pkg.Version, nil
}

type pm2Instance struct {
	bin, home string
	env       []string
	list      []int
}

func (p *pm2System) launch(ctx context.Context, o *options, n int) (_ instance, _ timing, err error) {
	home, err := os.MkdirTemp(o.work, "pm2")
	if err != nil {
		return nil, timing{}, fmt.Errorf("pm2 home: %w", err)
	}
	in := &pm2Instance{bin: p.bin, home: home, env: []string{"PM2_HOME=" + home}}
	defer func() {
		if err != nil {
			err = errors.Join(err, in.stop())
		}
	}()
	// The daemon starts outside the timing, as the allex daemons do.
	if _, err := run(ctx, time.Minute, in.env, p.bin, "ping"); err != nil {
		return nil, timing{}, err
	}
	base, err := freeBlock(n)
	if err != nil {
		return nil, timing{}, err
	}
	var addrs []string
	in.list, addrs = portAddrs(base, n)
	apps := make([]map[string]any, n)
	for i, port := range in.list {
		apps[i] = map[string]any{
			"name": "tiny" + strconv.Itoa(i), "script": o.tinysrv, "args": []string{strconv.Itoa(port)},
			"interpreter": "none", "exec_mode": "fork", "autorestart": true, "restart_delay": 0,
			"min_uptime": 0, "max_restarts": 1000000, "autostart": true,
		}
	}
	b, err := json.Marshal(map[string]any{"apps": apps})
	if err != nil {
		return nil, timing{}, fmt.Errorf("pm2 ecosystem: %w", err)
	}
	eco := filepath.Join(home, "ecosystem.json")
	if err := os.WriteFile(eco, b, 0o644); err != nil {
		return nil, timing{}, fmt.Errorf("pm2 ecosystem: %w", err)
	}
	start := time.Now()
	cliErr := make(chan error, 1)
	go func() {
		_, err := run(ctx, 5*time.Minute, in.env, p.bin, "start", eco)
		cliErr <- err
	}()
	d, err := waitAllAccept(ctx, addrs, start, 5*time.Minute)
	if err := errors.Join(err, <-cliErr); err != nil {
		return nil, timing{}, err
	}
	return in, timing{ready: d, accept: d}, nil
}

func (in *pm2Instance) daemonPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(in.home, "pm2.pid"))
	if err != nil {
		return 0, fmt.Errorf("pm2 daemon pid: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func (in *pm2Instance) pids() []namedPID {
	pid, _ := in.daemonPID()
	return []namedPID{{"PM2 daemon", pid, true}}
}

func (in *pm2Instance) kill(ctx context.Context, pr *prober, i int) (time.Duration, error) {
	return killByPort(ctx, pr, in.list[i])
}

func (in *pm2Instance) ports() []int { return in.list }

// stop runs pm2 kill, which stops the apps and the daemon; a daemon that
// survives it is killed.
func (in *pm2Instance) stop() error {
	pid, pidErr := in.daemonPID()
	_, err := run(context.Background(), 2*time.Minute, in.env, in.bin, "kill")
	if pidErr == nil {
		deadline := time.Now().Add(30 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			err = errors.Join(err, fmt.Errorf("pm2 daemon %d survived pm2 kill", pid))
		}
	}
	return err
}

// supervisordSystem runs Debian's supervisord in the foreground with a
// generated config.
type supervisordSystem struct{ daemon, ctl string }

func (*supervisordSystem) name() string { return "supervisord" }

func (s *supervisordSystem) prepare(ctx context.Context, o *options) (string, error) {
	find := func() bool {
		var err1, err2 error
		s.daemon, err1 = exec.LookPath("supervisord")
		s.ctl, err2 = exec.LookPath("supervisorctl")
		return err1 == nil && err2 == nil
	}
	if !find() {
		if _, err := exec.LookPath("apt-get"); err != nil {
			return "", errors.New("supervisord is not installed and there is no apt-get")
		}
		fmt.Fprintln(o.log, "installing supervisor with apt-get")
		env := []string{"DEBIAN_FRONTEND=noninteractive"}
		if _, err := run(ctx, 10*time.Minute, env, "apt-get", "install", "-y", "supervisor"); err != nil {
			if _, err := run(ctx, 10*time.Minute, env, "apt-get", "update"); err != nil {
				return "", fmt.Errorf("apt-get update: %w", err)
			}
			if _, err := run(ctx, 10*time.Minute, env, "apt-get", "install", "-y", "supervisor"); err != nil {
				return "", fmt.Errorf("apt-get install supervisor: %w", err)
			}
		}
		if !find() {
			return "", errors.New("supervisord still not on PATH after apt-get install supervisor")
		}
	}
	out, err := run(ctx, 30*time.Second, nil, s.daemon, "-v")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// procInstance is a supervisor that is one process of the bench's, with
// its services on a block of ports (supervisord, floor).
type procInstance struct {
	p     *proc
	list  []int
	grace time.Duration // stop: SIGTERM, then SIGKILL to its group after this
}

func (in *procInstance) pids() []namedPID { return []namedPID{{in.p.name, in.p.pid(), true}} }

func (in *procInstance) kill(ctx context.Context, pr *prober, i int) (time.Duration, error) {
	return killByPort(ctx, pr, in.list[i])
}

func (in *procInstance) ports() []int { return in.list }

func (in *procInstance) stop() error { return in.p.stop(in.grace) }

// dirAndPorts makes a dir for a system's files in the work dir and finds
// a block of n free ports for its services.
func dirAndPorts(o *options, what string, n int) (dir string, list []int, addrs []string, err error) {
	dir, err = os.MkdirTemp(o.work, what)
	if err != nil {
		return "", nil, nil, fmt.Errorf("%s dir: %w", what, err)
	}
	base, err := freeBlock(n)
	if err != nil {
		return "", nil, nil, err
	}
	list, addrs = portAddrs(base, n)
	return dir, list, addrs, nil
}

func (s *supervisordSystem) launch(ctx context.Context, o *options, n int) (_ instance, _ timing, err error) {
	// stop: SIGTERM makes supervisord stop every child before it exits.
	in := &procInstance{grace: 2 * time.Minute}
	dir, list, addrs, err := dirAndPorts(o, "sv", n)
	if err != nil {
		return nil, timing{}, err
	}
	in.list = list
	conf := filepath.Join(dir, "supervisord.conf")
	var b strings.Builder
	// minfds: supervisord keeps three pipe ends per child.
	fmt.Fprintf(&b, `[unix_http_server]
file=%[1]s/s.sock

[supervisord]
logfile=%[1]s/supervisord.log
pidfile=%[1]s/supervisord.pid
childlogdir=%[1]s
loglevel=warn
minfds=%[2]d

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%[1]s/s.sock
`, dir, 3*n+1024)
	// autostart=false: the daemon comes up first, outside the timing, and
	// "supervisorctl start all" starts the services, as pm2 start does.
	// stdout/stderr logs stay at their default (AUTO: a file each in
	// childlogdir), as allex and PM2 keep one per stream and process.
	for i, port := range in.list {
		fmt.Fprintf(&b, `
[program:tiny%d]
command=%s %d
autostart=false
autorestart=true
startsecs=0
startretries=1000000
`, i, o.tinysrv, port)
	}
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, timing{}, fmt.Errorf("supervisord config: %w", err)
	}
	in.p, err = startProc("supervisord", dir, filepath.Join(dir, "out.log"), nil, s.daemon, "-n", "-c", conf)
	if err != nil {
		return nil, timing{}, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, in.stop())
		}
	}()
	if err := pollUntil(ctx, time.Minute, in.p, func() error {
		_, err := run(ctx, 30*time.Second, nil, s.ctl, "-c", conf, "pid")
		return err
	}); err != nil {
		return nil, timing{}, fmt.Errorf("supervisord not answering: %w\n%s", err, in.p.tail())
	}
	start := time.Now()
	cliErr := make(chan error, 1)
	go func() {
		_, err := run(ctx, 5*time.Minute, nil, s.ctl, "-c", conf, "start", "all")
		cliErr <- err
	}()
	d, err := waitAllAccept(ctx, addrs, start, 5*time.Minute)
	if err := errors.Join(err, <-cliErr); err != nil {
		return nil, timing{}, err
	}
	return in, timing{ready: d, accept: d}, nil
}
