//go:build linux

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWorkDir makes the work dir both ways: -fs tmp is a temp dir on the
// machine's filesystem; -fs fresh is a new ext4 filesystem where this
// machine allows one (root with loop devices) and otherwise the temp dir
// with the reason in the report. Both are gone after cleanup.
func TestWorkDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, mode := range []string{fsTmp, fsFresh} {
		t.Run(mode, func(t *testing.T) {
			w, err := makeWorkDir(ctx, mode)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(w.path, "f"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(w.path, &st); err != nil {
				t.Fatal(err)
			}
			fresh := strings.Contains(w.info, "fresh 1 GiB ext4")
			switch {
			case mode == fsTmp && w.info != "files: a temp dir on the machine's filesystem (-fs tmp)":
				t.Errorf("info %q", w.info)
			case mode == fsFresh && !fresh && !strings.Contains(w.info, "-fs fresh could not make a filesystem ("):
				t.Errorf("info %q says neither fresh nor why not", w.info)
			case fresh && st.Type != unix.EXT4_SUPER_MAGIC:
				t.Errorf("fresh filesystem has type %#x, not ext4", st.Type)
			case fresh && st.Blocks*uint64(st.Bsize) > freshFSSize:
				t.Errorf("fresh filesystem is %d bytes, more than %d", st.Blocks*uint64(st.Bsize), freshFSSize)
			}
			if mode == fsFresh && !fresh {
				t.Logf("no fresh filesystem here: %s", w.info)
			}
			if err := w.cleanup(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(w.path); !os.IsNotExist(err) {
				t.Errorf("%s still there after cleanup: %v", w.path, err)
			}
			if fresh {
				if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(b), w.path) {
					t.Errorf("%s still mounted after cleanup", w.path)
				}
			}
		})
	}
}
