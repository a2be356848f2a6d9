//go:build !linux

package server

import "net"

// peerOf cannot identify callers on this platform; handlers that act for
// "the calling child" refuse such callers.
func peerOf(net.Conn) (PeerInfo, error) { return PeerInfo{}, nil }
