//go:build linux

package boottime

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNowIsUptime checks the clock against /proc/uptime, which the kernel
// derives from the same boot-time clock.
func TestNowIsUptime(t *testing.T) {
	before := Now()
	b, err := os.ReadFile("/proc/uptime")
	after := Now()
	if err != nil {
		t.Skip(err)
	}
	f := strings.Fields(string(b))
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatalf("/proc/uptime %q: %v", b, err)
	}
	up := time.Duration(secs * float64(time.Second))
	// /proc/uptime is rounded down to a hundredth of a second.
	if up < before-10*time.Millisecond || up > after {
		t.Fatalf("uptime %v outside the reads around it %v..%v", up, before, after)
	}
}
