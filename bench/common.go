//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/agent/spawner"
	"github.com/allex-go/allex/internal/procfs"
)

// proc is a daemon the bench started, in its own process group so a
// forced stop also takes whatever it left behind.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startProc runs bin with its output in logPath.
func startProc(name, dir, logPath string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace, then kills the process group.
func (p *proc) stop(grace time.Duration) error {
	if p == nil || p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s did not stop within %v after SIGTERM; killed its process group", p.name, grace)
}

// tail returns the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// run runs a short command and returns its combined output.
func run(ctx context.Context, timeout time.Duration, env []string, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, lastLines(out.String(), 20))
	}
	return out.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeBlock finds n consecutive loopback ports that are free right now.
// It looks below the kernel's ephemeral range (32768 and up on Linux) so
// outgoing connections, ours included, cannot take ports of the block
// while a system runs.
func freeBlock(n int) (int, error) {
	const low, high = 10000, 32768
	if n > high-low {
		return 0, fmt.Errorf("no block of %d free ports: too many", n)
	}
	for attempt := 0; attempt < 200; attempt++ {
		base := low + rand.IntN(high-low-n)
		ok := true
		for p := base; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no block of %d free ports", n)
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// readPID connects to a tinysrv and reads the pid it answers with.
func readPID(address string) (int, error) { return readPIDWithin(address, time.Second, 2*time.Second) }

// readPIDWithin is readPID with the connect and the read each bounded:
// the connect by dial, every read by read.
//
// It works with blocking system calls on the calling thread instead of
// the net package: a loopback connect then completes inside the call, and
// the answer is read as soon as it comes. Through Go's netpoller the
// prober's goroutine could wait for a P after its connect completed while
// a supervisor kept both cores busy, a prober delay added to every (b)
// sample, the same for every system, so smaller ratios looked larger.
func readPIDWithin(address string, dial, read time.Duration) (int, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !ap.Addr().Is4() {
		return 0, fmt.Errorf("%s: want an IPv4 address:port", address)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("dial %s: socket: %w", address, err)
	}
	defer unix.Close(fd)
	// Linux bounds a blocking connect with SO_SNDTIMEO and each read with
	// SO_RCVTIMEO.
	dtv, rtv := unix.NsecToTimeval(dial.Nanoseconds()), unix.NsecToTimeval(read.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &dtv); err != nil {
		return 0, fmt.Errorf("dial %s: %w", address, err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &rtv); err != nil {
		return 0, fmt.Errorf("dial %s: %w", address, err)
	}
	err = unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())})
	if errors.Is(err, unix.EINTR) {
		// A signal (the Go runtime sends some to its threads) ended the
		// call but not the connect, which a call with a timeout does not
		// restart (signal(7)): wait for it as for a non-blocking one.
		err = awaitConnect(fd, dial)
	}
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", address, err)
	}
	var buf [32]byte
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", address, err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		return 0, fmt.Errorf("%s answered %q, not a pid", address, buf[:n])
	}
	return pid, nil
}

// awaitConnect waits up to d for the connect in progress on fd to end and
// returns its result.
func awaitConnect(fd int, d time.Duration) error {
	switch ready, err := pollFD(fd, unix.POLLOUT, time.Now().Add(d)); {
	case err != nil:
		return err
	case !ready:
		return unix.ETIMEDOUT
	}
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if v != 0 {
		return unix.Errno(v)
	}
	return nil
}

// waitAllAccept waits until every address answers with a pid and returns
// how long after start the last one first did. It waits on one address at
// a time, in order, polling every millisecond: services start in parallel,
// so those already up pass at once, and the prober costs a few percent of
// a core instead of competing with the supervisor it measures.
func waitAllAccept(ctx context.Context, addrs []string, start time.Time, timeout time.Duration) (time.Duration, error) {
	deadline := start.Add(timeout)
	for i, a := range addrs {
		for {
			if _, err := readPID(a); err == nil {
				break
			}
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("%d of %d ports still not accepting after %v (first: %s)", len(addrs)-i, len(addrs), timeout, a)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return time.Since(start), nil
}

// killPoll is how often (b) looks for the replacement. The poll interval
// is part of every result; the same for every system, it is a larger
// share of the fastest one's.
const (
	// killPoll: a sock_diag question is cheaper than a refused connect
	// with its socket set-up (BenchmarkListening in agent/spawner), so
	// asking twice as often costs about what connect polling did.
	killPoll = 100 * time.Microsecond
	// killPollConnect is the poll where sock_diag is missing and every
	// look is a connect.
	killPollConnect = 200 * time.Microsecond
)

// pollSleep sleeps d in the kernel. time.Sleep cannot be used below a
// millisecond: an otherwise idle Go process waits in epoll, whose timeout
// is in whole milliseconds, so a shorter time.Sleep lasts a millisecond.
func pollSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}

// preciseSleeps sets the calling thread's timer slack to 1 ns, so its
// nanosleeps end when asked rather than up to 50 µs later (the default
// slack), and returns what undoes it. The caller has locked its thread.
func preciseSleeps() (restore func()) {
	old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return func() {}
	}
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0); err != nil {
		return func() {}
	}
	return func() { _ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0) }
}

// prober times (b)'s wait for a replacement, the same way for every
// system: it polls the kernel's socket table until the port has a
// listener again, then connects and reads the pid. Polling with
// connects instead (which it falls back to) found the replacement later:
// each look takes a socket, a handshake or reset and a close, which
// stretch the time between looks.
type prober struct {
	listen *spawner.ListenProbe // nil: connect polling
	poll   time.Duration
	note   string // for the report
}

// newProber opens the socket table probe, or says why it polls with
// connects.
func newProber() *prober {
	lp, err := spawner.NewListenProbe()
	if err != nil {
		return &prober{poll: killPollConnect, note: fmt.Sprintf("(b) polls with connects every %v: no sock_diag (%v)", killPollConnect, err)}
	}
	return &prober{listen: lp, poll: killPoll}
}

func (p *prober) close() {
	if p.listen != nil {
		_ = p.listen.Close()
	}
}

// waitNewPID polls address until a process other than old answers and
// returns its pid.
func (p *prober) waitNewPID(ctx context.Context, address string, old int, timeout time.Duration) (int, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", address, err)
	}
	// Its own thread, so the probes' blocking calls and sleeps never wait
	// for a P between them.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer preciseSleeps()()
	// The socket table is asked about 127.0.0.1 only.
	lp := p.listen
	if ap.Addr() != netip.AddrFrom4([4]byte{127, 0, 0, 1}) {
		lp = nil
	}
	deadline := time.Now().Add(timeout)
	for {
		look := true
		if lp != nil {
			var err error
			if look, err = lp.Listening(ap.Port()); err != nil {
				return 0, fmt.Errorf("%s: %w", address, err)
			}
		}
		if look {
			if pid, err := readPIDWithin(address, killProbeLimit, killProbeLimit); err == nil && pid != old {
				return pid, nil
			}
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: no replacement for pid %d accepted within %v", address, old, timeout)
		}
		pollSleep(p.poll)
	}
}

// killProbeLimit bounds one probe of (b), a safety net: with killWait no
// probe meets the dying listener, the cause of the hangs the bound was
// added for (such a probe waited for the SYN retransmit). A probe that
// still hangs is replaced, so the result measures the service rather than
// the prober's deadline.
const killProbeLimit = 100 * time.Millisecond

// killWait kill -9's pid and returns once the process has exited, with
// the time just before the signal, which is when (b)'s clock starts.
// Probing before the exit races the kernel closing the old listener: a
// SYN that reaches it while its owner closes it is backlogged and then
// discarded without a reset (the socket is then in CLOSE state), and a
// connection that completed just before is dropped from the accept queue
// without one, so the probe waits for a 1 s SYN retransmit or for its read
// deadline (seen in a loopback capture). The exit is known through a pidfd, which polls readable only after the
// process has closed its files. No supervisor can restart a child before
// it has exited, so the wait costs none of them anything.
func killWait(pid int, timeout time.Duration) (time.Time, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return time.Time{}, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	start := time.Now()
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return time.Time{}, fmt.Errorf("kill -9 pid %d: %w", pid, err)
	}
	switch ready, err := pollFD(fd, unix.POLLIN, start.Add(timeout)); {
	case err != nil:
		return time.Time{}, fmt.Errorf("wait for pid %d to exit: %w", pid, err)
	case !ready:
		return time.Time{}, fmt.Errorf("pid %d still running %v after kill -9", pid, timeout)
	}
	return start, nil
}

// pollFD waits until fd has one of events or deadline passes, and says
// which; a signal does not end the wait.
func pollFD(fd int, events int16, deadline time.Time) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n > 0, err
	}
}

// waitNoneAccept waits until no address accepts any more, so the next
// system starts on a quiet machine without leftovers.
func waitNoneAccept(addrs []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		alive := 0
		for _, a := range addrs {
			if c, err := net.DialTimeout("tcp", a, 200*time.Millisecond); err == nil {
				c.Close()
				alive++
			}
		}
		if alive == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d children still accept connections %v after their supervisor stopped", alive, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// usage is a process's resident memory and CPU use over an idle window.
type usage struct {
	RSSKB int
	// PSSKB is the proportional set size: shared pages count divided
	// among the processes that map them, so the master and its keeper,
	// one binary, do not count its pages twice.
	PSSKB      int
	CPUPercent float64 // of one core
}

func rssKB(pid int) (int, error) {
	return procKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
}

func pssKB(pid int) (int, error) {
	return procKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
}

// procKB reads the "key   N kB" line of a /proc file.
func procKB(path, key string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return 0, fmt.Errorf("%s %s: %w", path, key, err)
			}
			return kb, nil
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, key)
}

// measureIdle samples CPU of every pid over window and memory at its end.
func measureIdle(ctx context.Context, window time.Duration, pids ...int) ([]usage, error) {
	before := make([]uint64, len(pids))
	for i, pid := range pids {
		t, err := procfs.CPUTicks(pid)
		if err != nil {
			return nil, err
		}
		before[i] = t
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(window):
	}
	elapsed := time.Since(start).Seconds()
	out := make([]usage, len(pids))
	for i, pid := range pids {
		t, err := procfs.CPUTicks(pid)
		if err != nil {
			return nil, err
		}
		rss, err := rssKB(pid)
		if err != nil {
			return nil, err
		}
		pss, err := pssKB(pid)
		if err != nil {
			return nil, err
		}
		out[i] = usage{RSSKB: rss, PSSKB: pss, CPUPercent: float64(t-before[i]) / procfs.ClockTicks / elapsed * 100}
	}
	return out, nil
}

// percentile is the nearest-rank percentile p (0-100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}
