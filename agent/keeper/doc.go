// Package keeper owns the keeper: the small process that is the parent of
// every child of a master. It forks and reaps them, reports their exits,
// and kills them on deadlines the master cannot miss by crashing or being
// frozen: the end of the master's LAN lease (for "fenced" children) and
// the exit fence after the master is gone. The master keeps all
// supervision policy; Client is its side of the control socket and a
// spawner.Launcher.
//
// The keeper runs as `allexmaster keeper -state-dir DIR` (see Main); the
// protocol between the two is in protocol.go. Linux only: elsewhere Start
// and Main fail.
package keeper
