//go:build !linux

package spawner

import (
	"os"
	"os/exec"
)

// process is one started run of the child.
type process struct {
	pid int
	// os is the handle to end the process with where there are no
	// process groups to signal (Windows).
	os *os.Process
}

// launched is the process a Launcher started as pid. Where the handle
// cannot be had (Windows, the process gone already) ending it by handle
// fails, as for a process that has exited.
func launched(pid int) process {
	p, err := os.FindProcess(pid)
	if err != nil {
		return process{pid: pid}
	}
	return process{pid: pid, os: p}
}

// start starts cmd and sends how its process ended to done, once. Without
// pidfds each child's wait holds a thread of its own.
func start(cmd *exec.Cmd, _ *ExitWatcher, done chan<- ended) (process, error) {
	if err := cmd.Start(); err != nil {
		return process{}, err
	}
	go func() { done <- waitCmd(cmd) }()
	return process{pid: cmd.Process.Pid, os: cmd.Process}, nil
}

// waitCmd waits for cmd through os/exec, where the process has not been
// released.
func waitCmd(cmd *exec.Cmd) ended {
	err := cmd.Wait()
	if cmd.ProcessState == nil {
		return ended{code: -1, err: err}
	}
	code, sig := exitInfo(cmd.ProcessState)
	return ended{code: code, signal: sig}
}
