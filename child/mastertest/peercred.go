package mastertest

import (
	"context"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// peerCreds is a handshake-free transport credential that only reads the
// unix socket's peer pid, the way the real master identifies the calling
// child. It works with clients using insecure credentials because neither
// side writes anything during the handshake.
type peerCreds struct{}

// peerAuth carries the peer pid, 0 where the platform cannot tell.
type peerAuth struct {
	credentials.CommonAuthInfo
	pid int
}

func (peerAuth) AuthType() string { return "peercred" }

func (peerCreds) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, peerAuth{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, peerAuth{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity},
		pid:            peerPID(conn),
	}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (c peerCreds) Clone() credentials.TransportCredentials { return c }

// OverrideServerName is required by the interface; there is no server name
// to override.
func (peerCreds) OverrideServerName(string) error { return nil }

// callerPID is the pid of the process on the other end of the call, 0 when
// unknown.
func callerPID(ctx context.Context) int {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return 0
	}
	if a, ok := p.AuthInfo.(peerAuth); ok {
		return a.pid
	}
	return 0
}
