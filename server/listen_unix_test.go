//go:build !windows

package server

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestListenOneOwner: of many listeners started at once on one socket
// path, with a stale socket file in the way, exactly one gets it; the
// others fail with ErrInUse and leave its socket alone. Once the owner
// closes, the path can be taken again.
func TestListenOneOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	for round := range 20 {
		var wg sync.WaitGroup
		lns := make([]net.Listener, 8)
		errs := make([]error, 8)
		for i := range lns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lns[i], errs[i] = Listen(path, "")
			}()
		}
		wg.Wait()
		var owner net.Listener
		for i, ln := range lns {
			switch {
			case errs[i] == nil && owner == nil:
				owner = ln
			case errs[i] == nil:
				t.Fatalf("round %d: two listeners own %s", round, path)
			case !errors.Is(errs[i], ErrInUse):
				t.Fatalf("round %d: Listen = %v, want ErrInUse", round, errs[i])
			}
		}
		if owner == nil {
			t.Fatalf("round %d: nobody got the socket: %v", round, errs)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("round %d: the owner's socket is gone: %v", round, err)
		}
		c.Close()
		owner.Close()
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("round %d: socket left after Close: %v", round, err)
		}
	}
}

// TestListenSocketGroup: the socket is given to the group named, by name
// or id; an unknown group is refused before anything is created.
func TestListenSocketGroup(t *testing.T) {
	dir := t.TempDir()
	if _, err := Listen(filepath.Join(dir, "a.sock"), "no-such-group-allex"); err == nil || !strings.Contains(err.Error(), `socketgroup "no-such-group-allex": no such group`) {
		t.Fatalf("unknown group: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket made for an unknown group: %v", err)
	}
	gid := os.Getgid()
	ln, err := Listen(filepath.Join(dir, "b.sock"), strconv.Itoa(gid))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(filepath.Join(dir, "b.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Gid) != gid || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket group %d mode %v; want %d 0660", st.Gid, fi.Mode().Perm(), gid)
	}
}
