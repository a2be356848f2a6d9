//go:build unix

package procfs

import (
	"errors"
	"syscall"
)

// GroupAlive reports whether process group pgid has a member that is not
// a zombie (see Stat.Live). kill(-pgid, 0) alone counts zombies.
func GroupAlive(pgid int) (bool, error) {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false, nil
	}
	pids, err := Pids()
	if err != nil {
		return false, err
	}
	for _, pid := range pids {
		st, err := ReadStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		if st.Pgrp == pgid && st.Live() {
			return true, nil
		}
	}
	return false, nil
}
