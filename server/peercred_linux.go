//go:build linux

package server

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

func peerOf(c net.Conn) (PeerInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return PeerInfo{}, fmt.Errorf("peer credentials: %T is not a unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return PeerInfo{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return PeerInfo{}, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return PeerInfo{}, fmt.Errorf("peer credentials: SO_PEERCRED: %w", cerr)
	}
	return PeerInfo{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid), Known: true}, nil
}
