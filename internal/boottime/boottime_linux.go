//go:build linux

package boottime

import (
	"time"

	"golang.org/x/sys/unix"
)

// Now reads CLOCK_BOOTTIME: time since boot, suspend included. It panics
// if the clock cannot be read, which Linux has not allowed since 2.6.39.
func Now() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic("boottime: CLOCK_BOOTTIME: " + err.Error())
	}
	return time.Duration(ts.Nano())
}
