//go:build !windows

package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gofrs/flock"
)

// ErrInUse is returned by Listen when a live process answers on the socket.
var ErrInUse = errors.New("socket in use by a live process")

// Listen opens the machine socket at path with mode 0660, owned by the
// master's user and, when group is not "", by that group (a name or a
// numeric id), whose members may then use allexctl. It first takes
// the lock <path>.lock for the listener's life, so that of two masters
// started at once on one socket exactly one goes on; then an existing
// socket file is removed only when nothing answers on it, and a live owner
// (or a path that is not a socket) makes Listen fail.
func Listen(path, group string) (net.Listener, error) {
	gid, err := lookupGroup(group)
	if err != nil {
		return nil, err
	}
	lock := flock.New(path + ".lock")
	ok, err := lock.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock %s.lock: %w", path, err)
	}
	if !ok {
		return nil, fmt.Errorf("%s: %w: another allexmaster holds %s.lock", path, ErrInUse, path)
	}
	ln, err := listenLocked(path, gid)
	if err != nil {
		_ = lock.Unlock()
		return nil, err
	}
	ln.lock = lock
	return ln, nil
}

// lookupGroup resolves a group name or id; "" is -1 (the master's own).
func lookupGroup(group string) (int, error) {
	if group == "" {
		return -1, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		g, err = user.LookupGroupId(group)
	}
	if err != nil {
		return 0, fmt.Errorf("socketgroup %q: no such group", group)
	}
	return strconv.Atoi(g.Gid)
}

func listenLocked(path string, gid int) (*unixListener, error) {
	if err := clearStale(path); err != nil {
		return nil, err
	}
	// Listen on a private name, fix the mode, then rename into place, so no
	// client ever sees the socket with the umask's permissions.
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.%d.tmp", filepath.Base(path), os.Getpid()))
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o660); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := os.Lchown(tmp, -1, gid); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("socketgroup: give %s to group %d: %w (the master must run as root or be a member of the group)", path, gid, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("place socket at %s: %w", path, err)
	}
	return &unixListener{UnixListener: ln, path: path}, nil
}

// clearStale removes a socket file nobody answers on.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; refusing to remove it", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("%s: %w (is another allexmaster running?)", path, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("probe %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

type unixListener struct {
	*net.UnixListener
	path string
	lock *flock.Flock
	once sync.Once
}

// Close stops listening and removes the socket file, but only if it is
// still ours: a successor that already replaced it keeps its socket.
func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && fi.Mode().Type() == fs.ModeSocket {
			if conn, derr := net.DialTimeout("unix", l.path, 100*time.Millisecond); derr == nil {
				conn.Close()
				return
			}
			os.Remove(l.path)
		}
		if l.lock != nil {
			_ = l.lock.Unlock()
		}
	})
	return err
}
