//go:build windows

package child

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/Microsoft/go-winio"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// dialMaster prepares a client for the master's socket, which on Windows is
// a named pipe (\\.\pipe\allexmachinemanager) unless it is a unix socket
// path.
func dialMaster(path string) (*grpc.ClientConn, error) {
	if strings.HasPrefix(path, `\\.\pipe\`) {
		dialer := func(ctx context.Context, _ string) (net.Conn, error) {
			return winio.DialPipeContext(ctx, path)
		}
		conn, err := grpc.NewClient("passthrough:///allexmachinemanager",
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(dialer))
		if err != nil {
			return nil, fmt.Errorf("grpc client: %w", err)
		}
		return conn, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	// The opaque form keeps a drive letter from being read as an authority.
	conn, err := grpc.NewClient("unix:"+filepath.ToSlash(path), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("grpc client: %w", err)
	}
	return conn, nil
}
