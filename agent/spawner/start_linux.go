//go:build linux

package spawner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// process is one started run of the child. Linux ends it through its
// process group.
type process struct{ pid int }

// launched is the process a Launcher started as pid.
func launched(pid int) process { return process{pid: pid} }

// start starts cmd and sends how its process ended to done, once.
//
// The pidfd clone returns is the only descriptor the master keeps for the
// child: the exit watcher waits on it. The kernel copies every descriptor of
// the master into each child it forks and closes them again at exec, so
// each one held per child made every start slower as children grew: with
// two per child, 1000 descriptors at 500 children added 0.14 ms to a
// start (measured with os/exec), a tenth of a kill -9 → restart.
func start(cmd *exec.Cmd, w *ExitWatcher, done chan<- ended) (process, error) {
	pid, pidfd, err := forkExec(cmd)
	if err != nil {
		return process{}, err
	}
	reap := func() { done <- wait4(pid) }
	if pidfd < 0 {
		// No pidfd from clone (Linux before 5.2, or a sandbox without
		// it): the wait holds a thread of its own.
		go reap()
		return process{pid: pid}, nil
	}
	err = errors.New("no exit watcher")
	if w != nil {
		// An exit the watcher saw is reaped on its goroutine: the wait
		// does not block then, and a goroutine of its own took 35 µs
		// to start running (traced), on the way from a child's death to
		// its restart.
		err = w.watch(pidfd, func(gone bool) {
			if gone {
				reap()
			} else {
				go reap()
			}
		})
	}
	if err != nil {
		go func() {
			awaitPidfd(pidfd)
			reap()
		}()
	}
	return process{pid: pid}, nil
}

// forkExec starts cmd with syscall.StartProcess and returns its pid and
// the pidfd clone made for it (-1 if none). cmd is a description here,
// never started: os/exec's Start (and os.StartProcess under it) rebuilt a
// map of the environment, made an os.Process and duplicated its pidfd at
// every start, ~50 µs of the master's CPU in each kill -9 → restart (perf,
// 100 kills), on the path to the fork. Its stdio must be *os.File or nil
// (/dev/null).
func forkExec(cmd *exec.Cmd) (pid, pidfd int, err error) {
	var stdio [3]*os.File
	for i, s := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		switch f := s.(type) {
		case nil:
		case *os.File:
			stdio[i] = f
		default:
			return 0, -1, fmt.Errorf("fork/exec %s: stdio %d is a %T, not a file", cmd.Path, i, s)
		}
	}
	var files [3]uintptr
	var null *os.File // one /dev/null for every stream without a file
	for i, f := range stdio {
		if f == nil {
			if null == nil {
				if null, err = os.Open(os.DevNull); err != nil {
					return 0, -1, fmt.Errorf("fork/exec %s: %w", cmd.Path, err)
				}
				defer null.Close()
			}
			f, stdio[i] = null, null
		}
		files[i] = f.Fd()
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	sys := syscall.SysProcAttr{}
	if cmd.SysProcAttr != nil {
		sys = *cmd.SysProcAttr
	}
	pidfd = -1
	sys.PidFD = &pidfd
	// StartProcess also returns a process handle, unused on Linux.
	pid, _, err = syscall.StartProcess(cmd.Path, cmd.Args, &syscall.ProcAttr{Dir: cmd.Dir, Env: env, Files: files[:], Sys: &sys})
	// The descriptors were only borrowed by number.
	runtime.KeepAlive(stdio)
	if err != nil {
		return 0, -1, &os.PathError{Op: "fork/exec", Path: cmd.Path, Err: err}
	}
	return pid, pidfd, nil
}

// wait4 reaps pid, a child forkExec started.
func wait4(pid int) ended {
	var ws unix.WaitStatus
	_, err := unix.Wait4(pid, &ws, 0, nil)
	for errors.Is(err, unix.EINTR) {
		_, err = unix.Wait4(pid, &ws, 0, nil)
	}
	switch {
	case err != nil:
		return ended{code: -1, err: fmt.Errorf("wait4 %d: %w", pid, err)}
	case ws.Signaled():
		return ended{code: -1, signal: unix.SignalName(ws.Signal())}
	}
	return ended{code: ws.ExitStatus()}
}

// awaitPidfd returns once the process behind pidfd has exited (it is not
// reaped), and closes pidfd. It waits through the runtime poller, so the
// wait pins no OS thread. Any failure returns at once and wait4 blocks
// instead.
func awaitPidfd(pidfd int) {
	if err := unix.SetNonblock(pidfd, true); err != nil {
		_ = unix.Close(pidfd)
		return
	}
	// Non-blocking, so os.NewFile registers it with the netpoller.
	f := os.NewFile(uintptr(pidfd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		// A pidfd polls readable once the process has exited.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return err != nil || n > 0
	})
}
