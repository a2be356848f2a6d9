package keeper

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/internal/procfs"
)

// readPID waits for a pid a child's script wrote to name.
func readPID(t *testing.T, name string) int {
	t.Helper()
	var pid int
	pollUntil(t, "a pid in "+name, func() bool {
		pid, _ = strconv.Atoi(strings.TrimSpace(readFile(t, name)))
		return pid > 0
	})
	return pid
}

// TestStrays: a child that exits 0 leaving processes it started running,
// in its group or escaped from it with setsid, is reported with strays
// and those processes are killed; another child's escaped process is not
// taken for its own.
func TestStrays(t *testing.T) {
	c := startClient(t, "", 0)
	e := newExits()
	dir := t.TempDir()
	// The escaped shell writes its pid once setsid has run; the script
	// waits for it so that the process has left the group for sure.
	const escape = `setsid sh -c 'echo $$ > %s; exec sleep 300' & while [ ! -s %s ]; do sleep 0.01; done; `

	// Another instance's escaped process, orphaned to the keeper while
	// that instance runs on.
	otherFile := filepath.Join(dir, "other")
	other := shell(strings.ReplaceAll(`(`+escape+`) ; exec sleep 300`, "%s", otherFile))
	other.Env = append(os.Environ(), "ALLEX_INSTANCE=other")
	otherPID := e.start(t, c, other, false)
	otherStray := readPID(t, otherFile)
	pollUntil(t, "the other instance's stray orphaned", func() bool {
		st, err := procfs.ReadStat(otherStray)
		return err == nil && st.Ppid == c.keeperPID()
	})

	tests := []struct {
		name, script, mark string
		want               exit
		killed             bool // the stray is gone once the exit is reported
	}{
		{"in group", `sleep 300 & echo $! > %s; exit 0`, "ALLEX_INSTANCE=d1", exit{strays: true}, true},
		{"escaped", escape + "exit 0", "ALLEX_INSTANCE=d2", exit{strays: true}, true},
		// Without the instance's mark, an escaped process cannot be told
		// from another child's.
		{"escaped unmarked", escape + "exit 0", "", exit{}, false},
		// Only a clean exit is a daemon's parent leaving; the group is
		// killed all the same.
		{"failed", `sleep 300 & echo $! > %s; exit 3`, "ALLEX_INSTANCE=d3", exit{code: 3}, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(dir, strconv.Itoa(i))
			cmd := shell(strings.ReplaceAll(tt.script, "%s", pidFile))
			cmd.Env = os.Environ()
			if tt.mark != "" {
				cmd.Env = append(cmd.Env, tt.mark)
			}
			pid := e.start(t, c, cmd, false)
			x := e.wait(t, pid)
			stray := readPID(t, pidFile)
			if x != tt.want {
				t.Errorf("exit %+v, want %+v", x, tt.want)
			}
			awaitGone(t, pid)
			if tt.killed {
				pollUntil(t, fmt.Sprintf("stray %d gone", stray), func() bool { return !alive(stray) })
			} else if !alive(stray) {
				t.Errorf("unmarked escaped pid %d is gone", stray)
			} else {
				_ = unix.Kill(stray, unix.SIGKILL)
			}
		})
	}
	if !alive(otherStray) || !alive(otherPID) {
		t.Errorf("the other instance (%v) or its escaped process (%v) was killed", alive(otherPID), alive(otherStray))
	}
	_ = unix.Kill(otherStray, unix.SIGKILL)
}

func TestInstanceMark(t *testing.T) {
	for _, tt := range []struct {
		env  []string
		want string
	}{
		{nil, ""},
		{[]string{"A=1", "ALLEX_INSTANCE=web1", "B=2"}, "ALLEX_INSTANCE=web1"},
		{[]string{"ALLEX_INSTANCE_X=1", "XALLEX_INSTANCE=2"}, ""},
	} {
		if got := instanceMark(tt.env); got != tt.want {
			t.Errorf("instanceMark(%q) = %q, want %q", tt.env, got, tt.want)
		}
	}
}
