package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ClockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every
// Linux architecture Go supports.
const ClockTicks = 100

// StealTicks is the time, in clock ticks summed over the CPUs, the
// hypervisor ran something else while this machine's CPUs had work (the
// steal column of /proc/stat's cpu line); an error where there is none.
func StealTicks() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("steal: %w", err)
	}
	return ParseSteal(string(b))
}

// ParseSteal reads the steal column of /proc/stat's contents.
func ParseSteal(stat string) (uint64, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	// cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("steal: unexpected /proc/stat line %q", line)
	}
	v, err := strconv.ParseUint(f[8], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("steal: %w", err)
	}
	return v, nil
}

// CPUTicks is utime+stime of pid, in clock ticks.
func CPUTicks(pid int) (uint64, error) {
	st, err := ReadStat(pid)
	if err != nil {
		return 0, err
	}
	if !st.hasCPU {
		return 0, fmt.Errorf("procfs: /proc/%d/stat: no CPU times", pid)
	}
	return st.CPUTicks, nil
}
