package server

import (
	"context"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerInfo is who is on the other end of a machine socket connection, as
// the kernel tells it (SO_PEERCRED), not as the caller claims.
type PeerInfo struct {
	credentials.CommonAuthInfo
	PID, UID, GID int
	// Known is false where the platform cannot tell.
	Known bool
}

// AuthType implements credentials.AuthInfo.
func (PeerInfo) AuthType() string { return "peercred" }

// PeerFromContext returns the caller's credentials inside a handler.
func PeerFromContext(ctx context.Context) (PeerInfo, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return PeerInfo{}, false
	}
	info, ok := p.AuthInfo.(PeerInfo)
	return info, ok && info.Known
}

// peerCreds is a transport "security" that performs no handshake (the
// socket is local and protected by its mode) but records the peer's
// kernel-reported credentials for every connection. Clients connect with
// insecure credentials.
type peerCreds struct{}

func (peerCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, PeerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info, err := peerOf(c)
	if err != nil {
		return nil, nil, err
	}
	info.CommonAuthInfo = credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}
	return c, info, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (peerCreds) Clone() credentials.TransportCredentials { return peerCreds{} }

// OverrideServerName is part of the TransportCredentials interface.
func (peerCreds) OverrideServerName(string) error { return nil }
