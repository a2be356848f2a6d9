//go:build !windows

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/procfs"
	"github.com/allex-go/allex/lanmanager/adminclient"
)

// FaultLAN is a running allexlanmanager on loopback.
type FaultLAN struct {
	*Proc
	Port int
	// Token is the LAN manager's own; JoinToken the masters' (see LAN).
	Token, JoinToken string
	DataDir          string
	Admin            *adminclient.Client
}

// StartFaultLAN runs allexlanmanager on 127.0.0.1:port (0 picks a free port)
// with data in dataDir and the test timings (TimingFlags(TestHeartbeat,
// TestLease)) unless extra flags override them (later flags win), and
// waits until it answers.
func StartFaultLAN(t testing.TB, dataDir string, port int, token string, extra ...string) *FaultLAN {
	t.Helper()
	if port == 0 {
		port = FreeBlock(t, 1)
	}
	args := append([]string{"-addr", "127.0.0.1:" + strconv.Itoa(port), "-data", dataDir, "-token", token},
		TimingFlags(TestHeartbeat, TestLease)...)
	l := &FaultLAN{Port: port, Token: token, DataDir: dataDir}
	l.Proc = Start(t, dataDir, Bins.LAN, append(args, extra...)...)
	Eventually(t, 30*time.Second, func() error {
		if _, err := os.Stat(filepath.Join(dataDir, "tls", "ca.crt")); err != nil {
			return err
		}
		l.Admin = adminclient.New(l.URL(), PinnedToken(t, dataDir, token))
		l.Admin.HTTP.Timeout = 30 * time.Second
		select {
		case <-l.Proc.done:
			return fmt.Errorf("allexlanmanager exited (%v):\n%s", l.Proc.err, l.Output())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := l.Admin.Needs(ctx)
		return err
	})
	if l.JoinToken == "" {
		l.JoinToken = MakeToken(t, l.URL(), dataDir, "master", "-token", token)
	}
	return l
}

// URL is the LAN manager's base URL.
func (l *FaultLAN) URL() string { return "https://127.0.0.1:" + strconv.Itoa(l.Port) }

// FaultKill9 SIGKILLs the process alone (not its process group, so children
// in their own groups survive as a crashed daemon would leave them) and
// waits for it to be gone.
func FaultKill9(t testing.TB, p *Proc) {
	t.Helper()
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s survived SIGKILL", p.Cmd.Path)
	}
}

// KillAlone SIGKILLs the process alone, as FaultKill9 does, and returns
// when it is dead, without waiting for its output to end: a master's
// keeper writes to the same stderr and outlives it by up to the exit
// fence, and longer while a child ignores SIGTERM. It returns the time
// just before the signal was sent.
func KillAlone(t testing.TB, p *Proc) time.Time {
	t.Helper()
	pid := p.Cmd.Process.Pid
	at := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	Eventually(t, 30*time.Second, func() error {
		if FaultPIDAlive(pid) {
			return fmt.Errorf("pid %d survived SIGKILL", pid)
		}
		return nil
	})
	return at
}

// FaultMaster is an allexmaster linked to a LAN manager, running the demo
// module (allexmaster demochild: TCP echo, readiness ports).
type FaultMaster struct {
	*Proc
	ID, Dir, Socket string
	// TCP ports are Base..Base+Size-1.
	Base, Size int
}

// FaultMasterConfig is an allexmasterconfig.json for machine id linked to
// the LAN manager on 127.0.0.1:lanPort, with size ports per protocol from
// base, at most maxProcs children (0: no limit).
func FaultMasterConfig(dir, id string, lanPort int, token string, base, size, maxProcs int) string {
	return faultMasterConfig(dir, id, lanPort, token, base, size, maxProcs, nil)
}

// FaultHelperModule is a "modules" entry running the test binary as a
// child in the HelperMain mode given ("listen", "ignoreterm", ...) with a
// TCP port and port readiness.
func FaultHelperModule(mode string) map[string]any {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	return map[string]any{
		"command": self, "env": map[string]string{"ALLEX_TEST_HELPER": mode},
		"protocols": []string{"tcp"}, "readiness": "ports", "stoptimeout": "2s",
	}
}

func faultMasterConfig(dir, id string, lanPort int, token string, base, size, maxProcs int, modules map[string]any) string {
	cfg := map[string]any{
		"lanmanageraddress": "127.0.0.1",
		"lanmanagerport":    lanPort,
		"token":             token,
		"machineid":         id,
		"address":           "127.0.0.1",
		"portrangestart":    map[string]int{"tcp": base, "http": base + size, "ws": base + 2*size},
		"portrangesize":     size,
		"socket":            filepath.Join(dir, "m.sock"),
		"statedir":          filepath.Join(dir, "state"),
		"modules": map[string]any{"demo": map[string]any{
			"command": Bins.Master, "args": []string{"demochild"}, "protocols": []string{"tcp"},
			"readiness": "ports", "stoptimeout": "2s",
		}},
	}
	for name, m := range modules {
		cfg["modules"].(map[string]any)[name] = m
	}
	if maxProcs > 0 {
		cfg["maxprocesses"] = maxProcs
	}
	b, _ := json.Marshal(cfg)
	return string(b)
}

// StartFaultMaster starts a master with machine id in a fresh dir with a
// free port block of size per protocol.
func StartFaultMaster(t testing.TB, lan *FaultLAN, id string, size, maxProcs int) *FaultMaster {
	t.Helper()
	return StartFaultMasterWith(t, lan, id, size, maxProcs, nil)
}

// StartFaultMasterWith is StartFaultMaster with more modules beside demo
// (see FaultHelperModule).
func StartFaultMasterWith(t testing.TB, lan *FaultLAN, id string, size, maxProcs int, modules map[string]any) *FaultMaster {
	t.Helper()
	dir := ShortDir(t)
	base := FreeBlock(t, 3*size)
	WriteFile(t, dir, "allexmasterconfig.json", faultMasterConfig(dir, id, lan.Port, lan.JoinToken, base, size, maxProcs, modules))
	m := &FaultMaster{ID: id, Dir: dir, Socket: filepath.Join(dir, "m.sock"), Base: base, Size: size}
	m.Run(t)
	return m
}

// Run starts (or starts again, after a crash) the master in its dir.
func (m *FaultMaster) Run(t testing.TB) {
	t.Helper()
	m.Proc = Start(t, m.Dir, Bins.Master)
	m.WaitOutput("allexmaster running", 60*time.Second)
}

// FaultPS is one line of `allexctl -o json ps`.
type FaultPS struct {
	Instance string `json:"instance"`
	Pid      int    `json:"pid"`
	State    string `json:"state"`
	NeedID   string `json:"need_id"`
	Ports    []struct {
		Protocol string `json:"protocol"`
		Port     int    `json:"port"`
	} `json:"ports"`
}

// Live reports whether the child is up (not exited or failed).
func (e FaultPS) Live() bool {
	switch e.State {
	case "PROCESS_STATE_EXITED", "PROCESS_STATE_FAILED":
		return false
	}
	return e.Pid > 0
}

// PS lists the master's children.
func FaultPSList(t testing.TB, socket string) ([]FaultPS, error) {
	t.Helper()
	out, errOut, err := Ctl(t, socket, "-o", "json", "ps")
	if err != nil {
		return nil, fmt.Errorf("allexctl ps: %w: %s", err, errOut)
	}
	var resp struct {
		Processes []FaultPS `json:"processes"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		return nil, fmt.Errorf("ps -o json: %w\n%s", err, out)
	}
	return resp.Processes, nil
}

// FaultLinkState is the master's LAN link state from `allexctl -o json status`
// ("connected", "connecting", "disconnected").
func FaultLinkState(t testing.TB, socket string) (string, error) {
	t.Helper()
	out, errOut, err := Ctl(t, socket, "-o", "json", "status")
	if err != nil {
		return "", fmt.Errorf("allexctl status: %w: %s", err, errOut)
	}
	var st struct {
		State string `json:"lan_link_state"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return "", fmt.Errorf("status -o json: %w\n%s", err, out)
	}
	return st.State, nil
}

// FaultPIDAlive reports whether pid names a running (not zombie) process.
func FaultPIDAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	st, err := procfs.ReadStat(pid)
	return err == nil && st.Live()
}

// FaultPortAccepts reports whether 127.0.0.1:port accepts a TCP connection.
func FaultPortAccepts(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// FaultOrphans remembers child pids a test saw, and at cleanup kills the
// process groups of those still running a demo or helper child, so a
// failing fault test (a master killed with SIGKILL, whose keeper should
// have killed them) never leaves orphans behind.
type FaultOrphans struct {
	mu   sync.Mutex
	pids map[int]bool
}

// NewFaultOrphans returns a tracker cleaned up with t.
func NewFaultOrphans(t testing.TB) *FaultOrphans {
	o := &FaultOrphans{pids: map[int]bool{}}
	t.Cleanup(func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		for pid := range o.pids {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			env, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
			if err == nil && (strings.Contains(string(b), "demochild") || strings.Contains("\x00"+string(env), "\x00ALLEX_TEST_HELPER=")) {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return o
}

// Add records pids.
func (o *FaultOrphans) Add(pids ...int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range pids {
		if p > 0 {
			o.pids[p] = true
		}
	}
}

// FaultPortsInUse is the master's count of held ports per protocol
// ("PROTOCOL_TCP", ...) from `allexctl -o json status`.
func FaultPortsInUse(t testing.TB, socket string) (map[string]int, error) {
	t.Helper()
	out, errOut, err := Ctl(t, socket, "-o", "json", "status")
	if err != nil {
		return nil, fmt.Errorf("allexctl status: %w: %s", err, errOut)
	}
	var st struct {
		Ranges []struct {
			Protocol string `json:"protocol"`
			InUse    int    `json:"in_use"`
		} `json:"port_ranges"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status -o json: %w\n%s", err, out)
	}
	use := map[string]int{}
	for _, r := range st.Ranges {
		use[r.Protocol] = r.InUse
	}
	return use, nil
}

// FaultProcsOf lists the live processes started for the master on socket:
// those whose environment has ALLEX_MASTER_SOCKET=socket, whoever their
// parent is now, so orphans of a crashed master are found too.
func FaultProcsOf(socket string) []int {
	want := "\x00ALLEX_MASTER_SOCKET=" + socket + "\x00"
	pids, err := procfs.Pids()
	if err != nil {
		return nil
	}
	var out []int
	for _, pid := range pids {
		if !FaultPIDAlive(pid) {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		if strings.Contains("\x00"+string(env), want) {
			out = append(out, pid)
		}
	}
	return out
}

// FaultKeeperPID returns the pid of the keeper recorded in stateDir's
// keeper.pid ("<pid> <start time>") if that process still runs, else 0.
func FaultKeeperPID(stateDir string) int {
	b, err := os.ReadFile(filepath.Join(stateDir, "keeper.pid"))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	st, err := procfs.ReadStat(pid)
	if err != nil || !st.Live() || st.StartTime != start {
		return 0
	}
	return pid
}

// CopyProc is one child a CopyWatch saw: its master's label, instance and
// pid, and the first and last samples that found it alive. It died
// between Last and the next sample.
type CopyProc struct {
	Master, Instance string
	PID              int
	First, Last      time.Time
}

// CopyWatch samples /proc about every interval for the children of some
// masters, found by ALLEX_MASTER_SOCKET in their environment whoever
// their parent is now (their keeper, or nobody's once it died too), and
// keeps when each was seen alive. A sample in which one instance has two
// live processes, on one master or on two, is an overlap: two live
// copies of one instance.
type CopyWatch struct {
	masters  map[string]string // "ALLEX_MASTER_SOCKET=<socket>" → label
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once

	mu       sync.Mutex
	procs    []*CopyProc
	overlaps []string
	samples  int
	maxGap   time.Duration
}

// watchEntry is what a CopyWatch knows of one pid.
type watchEntry struct {
	firstSeen time.Time
	start     uint64    // start time, so a recycled pid is told apart
	proc      *CopyProc // nil: not a child of a watched master (yet)
}

// WatchCopies starts a CopyWatch of the masters given as socket → label;
// it stops at cleanup, or at Stop.
func WatchCopies(t testing.TB, interval time.Duration, masters map[string]string) *CopyWatch {
	w := &CopyWatch{masters: map[string]string{}, interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	for socket, label := range masters {
		w.masters["ALLEX_MASTER_SOCKET="+socket] = label
	}
	go w.run()
	t.Cleanup(w.Stop)
	return w
}

// Stop ends the sampling and waits for the last sample.
func (w *CopyWatch) Stop() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

func (w *CopyWatch) run() {
	defer close(w.done)
	cache := map[int]*watchEntry{}
	var last time.Time
	for {
		now := time.Now()
		w.sample(now, cache)
		w.mu.Lock()
		w.samples++
		if !last.IsZero() && now.Sub(last) > w.maxGap {
			w.maxGap = now.Sub(last)
		}
		w.mu.Unlock()
		last = now
		select {
		case <-w.stop:
			return
		case <-time.After(w.interval - min(time.Since(now), w.interval)):
		}
	}
}

// recheck is how long a process that is none of the watched children is
// looked at again: a keeper's fork has the keeper's environment until it
// execs the child.
const recheck = time.Second

func (w *CopyWatch) sample(now time.Time, cache map[int]*watchEntry) {
	pids, err := procfs.Pids()
	if err != nil {
		return
	}
	present := make(map[int]bool, len(pids))
	live := map[string][]*CopyProc{}
	for _, pid := range pids {
		present[pid] = true
		e := cache[pid]
		if e != nil && e.proc == nil && now.Sub(e.firstSeen) > recheck {
			continue
		}
		st, err := procfs.ReadStat(pid)
		if err != nil || !st.Live() {
			continue
		}
		if e == nil || e.start != st.StartTime {
			e = &watchEntry{firstSeen: now, start: st.StartTime}
			cache[pid] = e
		}
		if e.proc == nil {
			e.proc = w.identify(pid, now)
			if e.proc == nil {
				continue
			}
		}
		live[e.proc.Instance] = append(live[e.proc.Instance], e.proc)
	}
	for pid := range cache {
		if !present[pid] {
			delete(cache, pid)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for inst, ps := range live {
		for _, p := range ps {
			p.Last = now
		}
		if len(ps) > 1 && len(w.overlaps) < 20 {
			var who []string
			for _, p := range ps {
				who = append(who, fmt.Sprintf("pid %d on %s", p.PID, p.Master))
			}
			w.overlaps = append(w.overlaps, fmt.Sprintf("%s: %s live as %s", now.Format("15:04:05.000"), inst, strings.Join(who, " and ")))
		}
	}
}

// identify returns a new CopyProc if pid is a child of a watched master.
func (w *CopyWatch) identify(pid int, now time.Time) *CopyProc {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return nil
	}
	label, inst := "", ""
	for _, kv := range strings.Split(string(env), "\x00") {
		if l, ok := w.masters[kv]; ok {
			label = l
		}
		if v, ok := strings.CutPrefix(kv, "ALLEX_INSTANCE="); ok {
			inst = v
		}
	}
	if label == "" {
		return nil
	}
	p := &CopyProc{Master: label, Instance: inst, PID: pid, First: now}
	w.mu.Lock()
	w.procs = append(w.procs, p)
	w.mu.Unlock()
	return p
}

// Procs returns the children seen so far of master and instance ("" for
// any), in the order they were first seen.
func (w *CopyWatch) Procs(master, instance string) []CopyProc {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []CopyProc
	for _, p := range w.procs {
		if (master == "" || p.Master == master) && (instance == "" || p.Instance == instance) {
			out = append(out, *p)
		}
	}
	return out
}

// Overlaps describes the samples (the first 20) in which an instance had
// two live processes.
func (w *CopyWatch) Overlaps() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.overlaps...)
}

// Samples returns how many samples were taken and the longest time
// between two of them.
func (w *CopyWatch) Samples() (int, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.maxGap
}
