package keeper

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/internal/boottime"
)

// serve reads the master's requests and forks the children. It is the
// only goroutine that forks, and it stays locked to its thread for the
// keeper's whole life: a child's Pdeathsig fires when the thread that
// forked it ends, not the process.
func (k *keeper) serve() {
	runtime.LockOSThread()
	buf := make([]byte, MaxMessage+1)
	oob := make([]byte, unix.CmsgSpace(3*4))
	for {
		n, oobn, flags, _, err := unix.Recvmsg(k.sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		fds, ferr := rights(oob[:oobn])
		if err != nil || n == 0 {
			closeFDs(fds)
			if err != nil {
				k.log.Warn("control socket", "error", err)
			}
			k.terminate("the master is gone")
			break
		}
		if ferr == nil && flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			ferr = fmt.Errorf("keeper protocol: packet or its descriptors truncated (over %d bytes?)", MaxMessage)
		}
		if ferr != nil {
			closeFDs(fds)
			k.refuse(headerID(buf[:min(n, len(buf))]), ferr)
			continue
		}
		if bye := k.handle(buf[:n], fds); bye {
			break
		}
	}
	// Parked, never returning: the children's Pdeathsig is tied to this thread.
	select {}
}

// handle serves one request; it reports whether it was Bye.
func (k *keeper) handle(b []byte, fds []int) bool {
	m, err := parse(b)
	if err == nil && m.kind != kindStart && len(fds) > 0 {
		err = fmt.Errorf("keeper protocol: descriptors attached to a %q message", m.kind)
	}
	if err != nil {
		closeFDs(fds)
		k.refuse(headerID(b), err)
		return false
	}
	switch m.kind {
	case kindStart:
		k.start(&m, fds)
	case kindLease:
		k.setLease(m.id, m.n)
	case kindFence:
		k.setFence(m.id, m.n)
	case kindBye:
		k.killAll("the master said bye")
		return true
	default:
		k.refuse(m.id, fmt.Errorf("keeper protocol: %q is not a request", m.kind))
	}
	return false
}

// refuse logs a bad request and answers it with Failed.
func (k *keeper) refuse(id uint32, err error) {
	k.log.Error("bad request", "id", id, "error", err)
	k.out.send((&message{kind: kindFailed, id: id, text: err.Error()}).appendTo(nil))
}

// start forks m's child, with the descriptors it carries as its stdio.
func (k *keeper) start(m *message, fds []int) {
	// The child has its own copies once forked.
	defer closeFDs(fds)
	files := [3]uintptr{uintptr(k.null), uintptr(k.null), uintptr(k.null)}
	n := 0
	for i, on := range m.stdio {
		if on && n < len(fds) {
			files[i] = uintptr(fds[n])
			n++
		} else if on {
			n = -1
			break
		}
	}
	if n != len(fds) {
		k.refuse(m.id, fmt.Errorf("keeper protocol: start with %d descriptors for %v", len(fds), m.stdio))
		return
	}
	argv := m.argv
	if len(argv) == 0 {
		argv = []string{m.path}
	}
	attr := &syscall.ProcAttr{Dir: m.dir, Env: m.env, Files: files[:],
		Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}}
	// Held across the fork: the reaper, seeing the new pid exit, must
	// find it registered, and its Exited must follow Started.
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.mayStart(m.fenced); err != nil {
		k.out.send((&message{kind: kindFailed, id: m.id, text: err.Error()}).appendTo(nil))
		return
	}
	pid, err := syscall.ForkExec(m.path, argv, attr)
	if err != nil {
		err = &os.PathError{Op: "fork/exec", Path: m.path, Err: err}
		k.out.send((&message{kind: kindFailed, id: m.id, text: err.Error()}).appendTo(nil))
		return
	}
	k.children[pid] = kid{fenced: m.fenced, mark: instanceMark(m.env)}
	k.out.send((&message{kind: kindStarted, id: m.id, pid: pid}).appendTo(nil))
	k.wakeReaper()
}

// mayStart says why a child may not start now; k.mu is held.
func (k *keeper) mayStart(fenced bool) error {
	switch {
	case k.phase != serving:
		return errors.New("keeper: shutting down")
	case !fenced:
		return nil
	case !k.hasLease:
		return errors.New("fenced: no lease yet")
	}
	if now := boottime.Now(); now >= k.until {
		return fmt.Errorf("fenced: the master's LAN lease ran out at %v boot time, %v ago", k.until, now-k.until)
	}
	return nil
}

func (k *keeper) setFence(id uint32, d int64) {
	if d < 0 {
		k.refuse(id, fmt.Errorf("keeper protocol: negative exit fence %d", d))
		return
	}
	k.mu.Lock()
	k.fence = time.Duration(d)
	k.mu.Unlock()
}

// rights returns the descriptors in a control message.
func rights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("keeper protocol: control message: %w", err)
	}
	var fds []int
	var bad error
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			bad = fmt.Errorf("keeper protocol: control message: %w", err)
			continue
		}
		fds = append(fds, got...)
	}
	if len(fds) > 3 && bad == nil {
		bad = fmt.Errorf("keeper protocol: %d descriptors, at most 3", len(fds))
	}
	return fds, bad
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}
