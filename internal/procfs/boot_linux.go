//go:build linux

package procfs

import "golang.org/x/sys/unix"

// userHZ is the clock tick of /proc/<pid>/stat's times (USER_HZ, 100 on
// every architecture Go supports).
const userHZ = 100

// BootTicks reads CLOCK_BOOTTIME in the clock ticks a process's start
// time (Stat.StartTime) is counted in: the kernel stamps a new process
// with the same clock, so two reads around a fork that give the same tick
// give the child's start time without reading /proc. 0 if the clock
// cannot be read.
func BootTicks() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano()) / (1e9 / userHZ)
}
