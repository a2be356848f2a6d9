//go:build linux

package spawner

import "github.com/allex-go/allex/internal/procfs"

// groupAlive reports whether some member of process group pgid has not yet
// finished dying. Zombies count as finished: the kernel has closed their
// files (and so their listening ports) before they become zombies, and in a
// container whose PID 1 never reaps they would otherwise stay forever.
func groupAlive(pgid int) (bool, error) { return procfs.GroupAlive(pgid) }
