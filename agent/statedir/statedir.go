// Package statedir owns a master's state dir as a whole: the lock that
// makes it one master's for that master's life, and the identity the
// master keeps in it. Everything else in the dir (logs, the journal of
// children, the keeper's files) is only touched by the master holding
// the lock.
package statedir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gofrs/flock"

	"github.com/allex-go/allex/lanwire"
)

// File names in the state dir.
const (
	LockName     = "master.lock"
	IdentityName = "identity"
	// LogName is where the master and its keeper log once their stderr
	// fails (see package logfallback).
	LogName = "allexmaster.log"
)

// ErrInUse is wrapped when another master holds the state dir.
var ErrInUse = errors.New("state dir in use by another allexmaster")

// Dir is a locked state dir.
type Dir struct {
	path string
	lock *flock.Flock
}

// Lock takes the state dir (creating it if needed) for this process's
// life. It fails, having changed nothing else, when another master holds
// it. The lock is the kernel's (flock), so it ends with the process
// however that ends, and a child the master starts does not inherit it.
func Lock(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o750); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	name := filepath.Join(path, LockName)
	l := flock.New(name)
	ok, err := l.TryLock()
	if err != nil {
		return nil, fmt.Errorf("state dir %s: lock %s: %w", path, name, err)
	}
	if !ok {
		holder := ""
		if b, err := os.ReadFile(name); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			holder = " (pid " + strings.TrimSpace(string(b)) + ")"
		}
		return nil, fmt.Errorf("%s: %w%s; give each master its own statedir (and socket)", path, ErrInUse, holder)
	}
	// The holder's pid, for the message above; informational only.
	_ = os.WriteFile(name, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o640)
	return &Dir{path: path, lock: l}, nil
}

// Path returns the state dir.
func (d *Dir) Path() string { return d.path }

// Close releases the lock.
func (d *Dir) Close() error { return d.lock.Unlock() }

// Identity returns the master's identity, made on first use: random, so
// two masters given the same machine id (cloned VMs, hosts named alike)
// still differ, and kept, so the same master is known after a restart.
func (d *Dir) Identity() (string, error) {
	name := filepath.Join(d.path, IdentityName)
	b, err := os.ReadFile(name)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if !lanwire.ValidIdentity(id) {
			return "", fmt.Errorf("%s: %q is not an identity (16-128 of [A-Za-z0-9_.-]); remove the file to make a new one", name, id)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("identity: %w", err)
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	id := hex.EncodeToString(raw)
	if err := writeSync(name, id+"\n"); err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	return id, nil
}

// writeSync writes a new file and syncs it, so an identity that was used
// on the LAN is never lost to a crash.
func writeSync(name, content string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
