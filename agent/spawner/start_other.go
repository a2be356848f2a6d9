//go:build !linux

package spawner

import "os/exec"

// start starts cmd and sends how its process ended to done, once. Without
// pidfds each child's wait holds a thread of its own.
func start(cmd *exec.Cmd, _ *ExitWatcher, done chan<- ended) (process, error) {
	if err := cmd.Start(); err != nil {
		return process{}, err
	}
	go func() { done <- waitCmd(cmd) }()
	return process{pid: cmd.Process.Pid, os: cmd.Process}, nil
}
