//go:build !windows

package child

import (
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// dialMaster prepares a client for the master's unix socket. grpc.NewClient
// connects lazily, so the socket file is checked first to turn the common
// "master not running" case into a clear error instead of a gRPC timeout.
func dialMaster(path string) (*grpc.ClientConn, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	target := "unix:" + path
	if filepath.IsAbs(path) {
		target = "unix://" + path
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("grpc client: %w", err)
	}
	return conn, nil
}
