//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Every system keeps its files (logs, state, sockets, PM2's home) under
// o.work, and each one creates two log files per child, so creating a
// file is on every start path. How much that costs can depend on what the
// machine did before rather than on the system measured: on ext4 without a
// journal (this project's VMs) the inode allocator skips inodes freed in
// the last 1 to 6 minutes (fs/ext4/ialloc.c, recently_deleted) and walks
// over each of them on every create. After a test run or an earlier bench
// deleted a few thousand files, creating a file became many times slower,
// and the first system measured paid the most. With -fs fresh the
// bench makes a new ext4 filesystem (with its journal, as mkfs makes it by
// default) on a loop device for the run, so every system starts on the
// same clean filesystem.

const (
	fsFresh = "fresh"
	fsTmp   = "tmp"

	freshFSSize = 1 << 30
)

// mkfsArgs initialize the inode tables and the journal up front: lazy
// initialization would have a kernel thread zeroing them while the
// systems are measured.
var mkfsArgs = []string{"-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"}

// workDir is where the systems keep their files, with what the report says
// about it.
type workDir struct {
	path    string
	info    string
	cleanup func() error
}

// makeWorkDir makes o.work's directory: on a fresh filesystem with -fs
// fresh when this machine allows it (root, mkfs.ext4, loop devices), else a
// temp dir on the machine's own filesystem, with the reason in the report.
func makeWorkDir(ctx context.Context, mode string) (*workDir, error) {
	if mode == fsFresh {
		w, err := freshWorkDir(ctx)
		if err == nil {
			return w, nil
		}
		w, terr := tmpWorkDir()
		if terr != nil {
			return nil, terr
		}
		w.info = fmt.Sprintf("files: a temp dir on the machine's filesystem; -fs fresh could not make a filesystem (%v), "+
			"so file creation may cost more or less depending on what ran before (see bench/README.md)", err)
		return w, nil
	}
	w, err := tmpWorkDir()
	if err != nil {
		return nil, err
	}
	w.info = "files: a temp dir on the machine's filesystem (-fs tmp)"
	return w, nil
}

func tmpWorkDir() (*workDir, error) {
	// Short: unix socket paths inside it must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "abench")
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	return &workDir{path: dir, cleanup: func() error { return os.RemoveAll(dir) }}, nil
}

// freshWorkDir mounts a new ext4 filesystem, kept in a sparse image file
// in a temp dir, on a loop device.
func freshWorkDir(ctx context.Context) (_ *workDir, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("mounting a loop device needs root")
	}
	mkfs, err := lookSbin("mkfs.ext4")
	if err != nil {
		return nil, err
	}
	base, err := os.MkdirTemp("", "abench")
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	mnt := filepath.Join(base, "fs")
	mounted := false
	cleanup := func() error {
		var errs []error
		if mounted {
			if _, err := run(context.Background(), time.Minute, nil, "umount", mnt); err != nil {
				// Something still holds a file open: detach it now and
				// let the kernel finish when it closes.
				_, lerr := run(context.Background(), time.Minute, nil, "umount", "-l", mnt)
				errs = append(errs, err, lerr)
			}
		}
		errs = append(errs, os.RemoveAll(base))
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, cleanup())
		}
	}()
	img := filepath.Join(base, "fs.img")
	f, err := os.Create(img)
	if err != nil {
		return nil, fmt.Errorf("filesystem image: %w", err)
	}
	err = f.Truncate(freshFSSize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("filesystem image: %w", err)
	}
	if _, err := run(ctx, 2*time.Minute, nil, mkfs, append(append([]string(nil), mkfsArgs...), img)...); err != nil {
		return nil, err
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	if _, err := run(ctx, time.Minute, nil, "mount", "-o", "loop", img, mnt); err != nil {
		return nil, err
	}
	mounted = true
	return &workDir{
		path: mnt,
		info: fmt.Sprintf("files: every system's files on a fresh %d GiB ext4 filesystem made for this run "+
			"(`mkfs.ext4 %s`, mounted with `mount -o loop`; see bench/README.md)",
			freshFSSize>>30, strings.Join(mkfsArgs, " ")),
		cleanup: cleanup,
	}, nil
}

// lookSbin finds an administration command that may not be on a user's
// PATH.
func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (Debian: apt-get install e2fsprogs)", name)
}
