//go:build linux

package nemesis

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// checkerNice is the niceness the test process, the checker, runs at, so
// that a loaded machine delays the system under test rather than its
// observer: on two cores, forty children started and killed at once
// stretched a /proc scan to 300-500ms at the test's own niceness, 100-170ms
// at -10. The daemons are started back at
// the test's own niceness (see raisePriority).
const checkerNice = -10

// raisePriority renices every thread of this process to checkerNice
// (threads created later inherit it) and returns the test's niceness
// before, to restore, and what the daemons must add back to run at it.
func raisePriority() (orig, back int, err error) {
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		return 0, 0, err
	}
	orig = 20 - prio // the system call's encoding of niceness
	if orig <= checkerNice {
		return orig, 0, nil
	}
	if err := setNice(checkerNice); err != nil {
		return orig, 0, err
	}
	return orig, orig - checkerNice, nil
}

// setNice renices every thread of this process; twice, for threads
// cloned by one not yet reniced.
func setNice(nice int) error {
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				continue
			}
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil && err != unix.ESRCH {
				return err
			}
		}
	}
	return nil
}
