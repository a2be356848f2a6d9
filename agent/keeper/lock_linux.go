package keeper

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/internal/procfs"
)

// Bounds of the waits for the state dir's lock.
const (
	lockPoll  = 10 * time.Millisecond
	lockLimit = 5 * time.Second // for a keeper to let go after SIGTERM + its fence, or after SIGKILL
)

// errTakenOver ends a client's attempts to start a new keeper: another
// master's Start has taken the state dir.
var errTakenOver = errors.New("keeper: another master took over the state dir")

// lockStateDir returns <dir>/keeper.lock, flocked, for the next keeper to
// inherit: whoever holds it runs the only keeper of dir. When takeOver (a
// master starting), a keeper holding it is asked to stop (SIGTERM: it ends
// its children) and killed if it has not let go in time, and the client
// named by token becomes the dir's owner. Otherwise (a client replacing
// its dead keeper) it waits for the lock only while its client is still
// the owner, so that it never takes the dir back from a newer master.
func lockStateDir(ctx context.Context, dir, token string, fence time.Duration, takeOver bool, log hclog.Logger) (*os.File, error) {
	name := filepath.Join(dir, lockName)
	fd, err := unix.Open(name, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keeper: lock: %w", &os.PathError{Op: "open", Path: name, Err: err})
	}
	f := os.NewFile(uintptr(fd), name)
	locked := tryLock(fd)
	if !locked && takeOver {
		if pid, ok := staleKeeper(dir); ok {
			// Owner first: its client must not replace the keeper stopped here.
			if err := writeOwner(dir, token); err != nil {
				_ = f.Close()
				return nil, err
			}
			log.Warn("stopping the keeper an earlier master left", "pid", pid, "state_dir", dir)
			_ = unix.Kill(pid, unix.SIGTERM)
			locked = awaitLock(ctx, fd, max(fence, DefaultExitFence)+lockLimit)
			if pid, ok := staleKeeper(dir); ok && !locked {
				log.Warn("the earlier keeper did not stop; killing it and its children's groups", "pid", pid)
				killKeeper(pid)
			}
		}
	}
	if !locked && (takeOver || readOwner(dir) == token) {
		locked = awaitLock(ctx, fd, lockLimit)
	}
	switch {
	case locked && takeOver:
		err = writeOwner(dir, token)
	case locked && readOwner(dir) != token:
		err = errTakenOver
	case !locked && !takeOver && readOwner(dir) != token:
		err = errTakenOver
	case !locked && ctx.Err() != nil:
		err = fmt.Errorf("keeper: lock %s: %w", name, ctx.Err())
	case !locked:
		err = fmt.Errorf("keeper: %s is held by another keeper (keeper.pid: %s)", name, readPidFile(dir))
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// newToken names one client among all the masters of a state dir.
func newToken() string { return strconv.Itoa(os.Getpid()) + " " + rand.Text() }

func readOwner(dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, ownerName))
	return string(bytes.TrimSpace(b))
}

// writeOwner replaces keeper.owner whole; masters may race to write it.
func writeOwner(dir, token string) error {
	f, err := os.CreateTemp(dir, ownerName+".*.tmp")
	if err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	_, err = f.WriteString(token + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, ownerName))
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("keeper: %w", err)
	}
	return nil
}

func tryLock(fd int) bool {
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			return err == nil
		}
	}
}

// awaitLock polls the lock until it is taken, limit passes or ctx ends.
// Polled because a blocking flock cannot be given up.
func awaitLock(ctx context.Context, fd int, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(lockPoll)
	defer tick.Stop()
	for !tryLock(fd) {
		select {
		case <-tick.C:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// staleKeeper returns the pid in <dir>/keeper.pid if that process is
// still the one that wrote it.
func staleKeeper(dir string) (int, bool) {
	f := bytes.Fields([]byte(readPidFile(dir)))
	if len(f) != 2 {
		return 0, false
	}
	pid, err1 := strconv.Atoi(string(f[0]))
	start, err2 := strconv.ParseUint(string(f[1]), 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return 0, false
	}
	st, err := procfs.ReadStat(pid)
	if err != nil || st.StartTime != start || !st.Live() {
		return 0, false
	}
	return pid, true
}

func readPidFile(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, pidName))
	if err != nil {
		return err.Error()
	}
	return string(bytes.TrimSpace(b))
}

// killKeeper SIGKILLs a keeper and then its children's groups: they die
// of their Pdeathsig, but grandchildren would not.
func killKeeper(pid int) {
	var groups []int
	if pids, err := procfs.Pids(); err == nil {
		for _, p := range pids {
			if ppid, ok := parentOf(p); ok && ppid == pid {
				groups = append(groups, p)
			}
		}
	}
	_ = unix.Kill(pid, unix.SIGKILL)
	for _, g := range groups {
		signalGroup(g, unix.SIGKILL)
	}
}
