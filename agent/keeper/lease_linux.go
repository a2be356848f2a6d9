package keeper

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/internal/boottime"
)

// newLeaseTimer makes the timer that ends the lease: a timerfd on
// CLOCK_BOOTTIME, so the deadline holds across a suspend and is the very
// instant the master computed, read through the netpoller.
func newLeaseTimer() (*os.File, int, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_BOOTTIME, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		return nil, -1, fmt.Errorf("lease timer: %w", err)
	}
	return os.NewFile(uintptr(fd), "lease-timer"), fd, nil
}

// setLease replaces the lease; a past end takes effect at once.
func (k *keeper) setLease(id uint32, until int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.until, k.hasLease = time.Duration(until), true
	// A zero expiry would disarm the timer instead.
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(max(until, 1))}
	if err := unix.TimerfdSettime(k.leaseFD, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		// Cannot happen with a valid timerfd; without a timer the lease
		// would not be enforced, so end it now.
		k.refuse(id, fmt.Errorf("lease timer: %w", err))
		k.until = 0
		k.killFencedLocked()
	}
}

// watchLease kills the fenced children each time the lease runs out.
func (k *keeper) watchLease() {
	var b [8]byte
	for {
		if _, err := k.lease.Read(b[:]); err != nil {
			k.log.Error("lease timer failed; fenced children killed", "error", err)
			k.mu.Lock()
			k.until = 0
			k.killFencedLocked()
			k.mu.Unlock()
			return
		}
		k.mu.Lock()
		// The lease may have moved on since the timer fired.
		if k.hasLease && boottime.Now() >= k.until {
			k.killFencedLocked()
		}
		k.mu.Unlock()
	}
}

// killFencedLocked SIGKILLs the group of every fenced child; k.mu is held.
func (k *keeper) killFencedLocked() {
	n := 0
	for pid, c := range k.children {
		if c.fenced {
			signalGroup(pid, unix.SIGKILL)
			n++
		}
	}
	if n > 0 {
		k.log.Warn("the master's LAN lease ran out: killed the fenced children", "children", n, "until", k.until)
	}
}
