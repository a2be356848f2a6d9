//go:build linux

package procfs

import (
	"os"
	"os/exec"
	"testing"
)

// TestBootTicks checks that BootTicks counts on the clock and in the unit
// of Stat.StartTime: ticks read around a fork that agree are the child's
// start time.
func TestBootTicks(t *testing.T) {
	self, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if now := BootTicks(); now == 0 || now < self.StartTime {
		t.Fatalf("BootTicks %d, before this process's start %d", now, self.StartTime)
	}
	pinned := 0
	for range 20 {
		cmd := exec.Command("sleep", "10")
		before := BootTicks()
		if err := cmd.Start(); err != nil {
			t.Skipf("no sleep(1): %v", err)
		}
		after := BootTicks()
		st, err := ReadStat(cmd.Process.Pid)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if st.StartTime < before || st.StartTime > after {
			t.Fatalf("child started at tick %d, outside the reads around its fork %d-%d", st.StartTime, before, after)
		}
		if before == after {
			pinned++
		}
	}
	// A fork takes well under a tick (10 ms); most reads agree.
	if pinned == 0 {
		t.Fatal("no fork pinned to one tick in 20")
	}
}
