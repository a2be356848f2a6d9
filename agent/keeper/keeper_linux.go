package keeper

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/agent/statedir"
	"github.com/allex-go/allex/internal/cloexec"
	"github.com/allex-go/allex/internal/logfallback"
	"github.com/allex-go/allex/internal/procfs"
)

// The descriptors the client hands the keeper (exec.Cmd.ExtraFiles).
const (
	sockFD = 3 // the keeper's end of the control socket
	lockFD = 4 // <statedir>/keeper.lock, flocked by the client
)

// DefaultExitFence is how long children get between SIGTERM and SIGKILL
// once the master is gone.
const DefaultExitFence = 2 * time.Second

// Files in the state dir.
const (
	lockName  = "keeper.lock"
	pidName   = "keeper.pid"   // "<pid> <start time in ticks>\n"
	ownerName = "keeper.owner" // the client that last took the dir: "<pid> <random>\n"
)

// Phases of the keeper's life.
const (
	serving  = iota
	draining // children have had SIGTERM; SIGKILL at the exit fence
	killing  // everything left gets SIGKILL; exit once no child is left
)

// keeper is the keeper process's state.
type keeper struct {
	log     hclog.Logger
	sock    int
	null    int // /dev/null, for stdio the master did not attach
	pidFile string
	out     *outbox
	lease   *os.File      // timerfd on CLOCK_BOOTTIME, armed at the lease's end
	leaseFD int           // lease's descriptor (File.Fd would make it blocking)
	kick    chan struct{} // cap 1: the reaper may have a child to wait for
	done    chan struct{} // closed by the reaper: shutting down, no child left

	mu       sync.Mutex
	children map[int]kid // started by request, not yet reaped: pid (= pgid) → kid
	until    time.Duration
	hasLease bool
	fence    time.Duration
	phase    int
}

// kid is a child the keeper started.
type kid struct {
	fenced bool
	// mark is its ALLEX_INSTANCE=... environment entry ("" if none), which
	// the processes it starts inherit: it tells them once they have left
	// its process group (see strays).
	mark string
}

// Main runs the keeper: args are its flags, fd 3 its end of the control
// socket and fd 4 the state dir's lock, held. It returns the exit code:
// 0 once every child is gone after the master left, said Bye, or a
// SIGTERM.
func Main(args []string) int {
	lowFootprint()
	fs := flag.NewFlagSet("keeper", flag.ContinueOnError)
	stateDir := fs.String("state-dir", "", "the master's state dir (keeper.lock, keeper.pid)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Its stderr is the master's: when that fails, the keeper's lines
	// follow the master's into the state dir.
	out := logfallback.New(os.Stderr, "stderr")
	log := hclog.New(&hclog.LoggerOptions{Name: fmt.Sprintf("keeper[%d]", os.Getpid()), Output: out})
	if *stateDir == "" {
		log.Error("-state-dir is required; the keeper is started by allexmaster")
		return 2
	}
	out.SetFile(filepath.Join(*stateDir, statedir.LogName))
	k, err := newKeeper(*stateDir, log)
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	return k.run()
}

func newKeeper(stateDir string, log hclog.Logger) (*keeper, error) {
	// A terminal's ^C or hang-up is the master's business; a master gone
	// shows as EOF, not a signal; a closed stderr fails the write. Caught
	// and dropped, not ignored: an ignored signal would stay ignored in
	// every child the keeper starts.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	// Its own process name, so that "pkill allexmaster" (or an OOM
	// report, or ps) tells the two apart: killing both at once would leave
	// grandchildren behind that only the keeper can account for.
	_ = os.WriteFile("/proc/self/comm", []byte("allexkeeper"), 0)
	// No child may hold the socket, the lock, or whatever else the master
	// itself inherited without close-on-exec.
	cloexec.Inherited()
	if t, err := unix.GetsockoptInt(sockFD, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("fd %d is not a SOCK_SEQPACKET socket (type %d, %v)", sockFD, t, err)
	}
	// The client locked this open file; locking it again through the
	// same file succeeds, and fails if no one did (a stray keeper).
	if err := unix.Flock(lockFD, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil, fmt.Errorf("fd %d: state dir lock: %w", lockFD, err)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become a subreaper: %w", err)
	}
	null, err := unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	lease, leaseFD, err := newLeaseTimer()
	if err != nil {
		return nil, err
	}
	k := &keeper{
		log:      log,
		sock:     sockFD,
		null:     null,
		pidFile:  filepath.Join(stateDir, pidName),
		out:      newOutbox(sockFD),
		lease:    lease,
		leaseFD:  leaseFD,
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		children: map[int]kid{},
		fence:    DefaultExitFence,
	}
	if err := writePidFile(k.pidFile); err != nil {
		return nil, err
	}
	return k, nil
}

// The keeper allocates little and rarely (a message per start or exit),
// so it trades a few more collections for a heap that stays small, and
// keeps no allocation profile, which nothing reads.
const keeperGCPercent = 25

func lowFootprint() {
	runtime.MemProfileRate = 0
	debug.SetGCPercent(keeperGCPercent)
}

// writePidFile records this process with its start time, so that a
// later master signals it only if the pid was not recycled.
func writePidFile(name string) error {
	st, err := procfs.ReadStat(os.Getpid())
	if err != nil {
		return err
	}
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", os.Getpid(), st.StartTime), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

func (k *keeper) run() int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		k.terminate("SIGTERM")
	}()
	go k.out.run()
	go k.reap()
	go k.watchLease()
	k.out.send((&message{kind: kindReady, n: Version}).appendTo(nil))
	go k.serve()
	// What the binary's package initializers and the start-up left on the
	// heap is garbage from here on.
	go debug.FreeOSMemory()
	<-k.done
	k.out.flush(time.Second)
	if err := os.Remove(k.pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		k.log.Warn("cannot remove pid file", "error", err)
	}
	return 0
}

// terminate starts the end after the master left or a SIGTERM: SIGTERM
// to every child's group now, SIGKILL at the exit fence.
func (k *keeper) terminate(why string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.phase != serving {
		return
	}
	k.phase = draining
	if len(k.children) > 0 {
		k.log.Info("stopping every child", "reason", why, "children", len(k.children), "fence", k.fence)
	}
	for pid := range k.children {
		signalGroup(pid, unix.SIGTERM)
	}
	time.AfterFunc(k.fence, func() { k.killAll("exit fence") })
	k.wakeReaper()
}

// killAll SIGKILLs every child's group and every process reparented to
// the keeper; the keeper exits once the reaper has none left.
func (k *keeper) killAll(why string) {
	k.mu.Lock()
	if k.phase == killing {
		k.mu.Unlock()
		return
	}
	k.phase = killing
	if len(k.children) > 0 {
		k.log.Info("killing every child", "reason", why, "children", len(k.children))
	}
	for pid := range k.children {
		signalGroup(pid, unix.SIGKILL)
	}
	killOrphansLocked()
	k.mu.Unlock()
	k.wakeReaper()
}

func (k *keeper) wakeReaper() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

func signalGroup(pgid int, sig unix.Signal) {
	_ = unix.Kill(-pgid, sig) // ESRCH: gone already
}
