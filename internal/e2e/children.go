//go:build !windows

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// npmTimeout bounds `npm ci`, which may download.
const npmTimeout = 5 * time.Minute

// EnsureNodeModules returns the path of node, skipping the test when node
// is not installed, after installing the pinned dependencies of the Node.js
// project in dir (`npm ci`) when its node_modules is missing, as on a clean
// checkout. Test packages run in parallel and several use the same example,
// so the install holds an exclusive flock on dir: the second test waits and
// then finds node_modules in place.
func EnsureNodeModules(t testing.TB, dir string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; skipping the Node.js child test")
	}
	modules := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(modules); err == nil {
		return node
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("node is installed but npm is not; cannot install the Node.js example's dependencies")
	}
	if err := npmCI(npm, dir, modules); err != nil {
		t.Fatal(err)
	}
	return node
}

func npmCI(npm, dir, modules string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	// Closing d releases the lock.
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", dir, err)
	}
	if _, err := os.Stat(modules); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), npmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		// A half-written node_modules would pass the check above next time.
		_ = os.RemoveAll(modules)
		return fmt.Errorf("npm ci in %s: %w\n%s", dir, err, out)
	}
	return nil
}
