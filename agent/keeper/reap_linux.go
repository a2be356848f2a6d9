package keeper

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/internal/procfs"
)

// reap is the keeper's one reaper. It peeks at an exited child with
// waitid(WNOWAIT), so the pid stays a zombie and neither it nor its
// process group id can be recycled, kills the child's group, and only
// then reaps it: the group is dead (or dying) when the master hears of
// the exit and signals the group itself. Processes reparented to the
// keeper (it is a subreaper) are reaped silently. It closes k.done once
// the keeper is ending and no child is left.
func (k *keeper) reap() {
	sweep := false // killing: look for new orphans once the zombies are reaped
	for {
		opts := unix.WEXITED | unix.WNOWAIT
		if sweep {
			opts |= unix.WNOHANG
		}
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, opts, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD):
			sweep = false
			if k.waitForChild() {
				close(k.done)
				return
			}
			continue
		case err != nil:
			panic("keeper: waitid: " + err.Error())
		}
		pid, status := siginfoChild(&info)
		if pid == 0 { // WNOHANG: none exited
			sweep = false
			k.mu.Lock()
			killOrphansLocked()
			k.mu.Unlock()
			continue
		}
		k.reapOne(pid, info.Code == cldExited && status == 0)
		sweep = k.isKilling()
	}
}

// waitForChild is called when the keeper has no child: it reports whether
// the keeper is done, else waits until it may have one.
func (k *keeper) waitForChild() (done bool) {
	k.mu.Lock()
	ending, none := k.phase != serving, len(k.children) == 0
	k.mu.Unlock()
	switch {
	case ending && none:
		return true
	case none:
		<-k.kick
	}
	// Else a child forked after waitid looked: wait for it.
	return false
}

func (k *keeper) isKilling() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.phase == killing
}

// reapOne handles pid, which has exited (with code 0 if clean) and is
// not reaped yet.
func (k *keeper) reapOne(pid int, clean bool) {
	// Held so that a fork in progress registers its pid first; and a
	// failed exec's child, which ForkExec reaps itself, is gone by then.
	k.mu.Lock()
	defer k.mu.Unlock()
	c, ours := k.children[pid]
	if !ours {
		_ = wait4(pid, unix.WNOHANG)
		return
	}
	// Only a clean exit can be a daemon's parent leaving: the search
	// stays off the path of a killed child's restart.
	strays := clean && k.strays(pid, c.mark)
	signalGroup(pid, unix.SIGKILL)
	ws := wait4(pid, 0)
	delete(k.children, pid)
	m := message{kind: kindExited, pid: pid, code: -1, strays: strays}
	switch {
	case ws.Exited():
		m.code = ws.ExitStatus()
	case ws.Signaled():
		m.text = unix.SignalName(ws.Signal())
	}
	k.out.send(m.appendTo(nil))
}

func wait4(pid, opts int) unix.WaitStatus {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, opts, nil)
		if !errors.Is(err, unix.EINTR) {
			return ws
		}
	}
}

// cldExited is si_code for a child that exited (rather than was killed).
const cldExited = 1

// siginfoChild reads si_pid and si_status, which x/sys/unix does not
// name: the union after si_signo, si_errno and si_code starts
// pointer-aligned, and a SIGCHLD's fields there are si_pid, si_uid and
// si_status (the exit code when si_code is cldExited).
func siginfoChild(info *unix.Siginfo) (pid, status int) {
	const ptr = unsafe.Sizeof(uintptr(0))
	const off = (12 + ptr - 1) &^ (ptr - 1)
	base := unsafe.Add(unsafe.Pointer(info), off)
	return int(*(*int32)(base)), int(*(*int32)(unsafe.Add(base, 8)))
}

// killOrphansLocked SIGKILLs every child of the keeper, its own and
// those reparented to it. k.mu is held, so no child is reaped (and its pid
// recycled) between reading its parent and the kill.
func killOrphansLocked() {
	self := os.Getpid()
	pids, err := procfs.Pids()
	if err != nil {
		return
	}
	for _, pid := range pids {
		if ppid, ok := parentOf(pid); ok && ppid == self {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// parentOf reads a process's parent from /proc/<pid>/stat (the field
// after the state, after the command name's last ')').
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}
