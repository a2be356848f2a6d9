//go:build !unix

package procfs

import "os"

const statBufSize = 0

func readSmall(path string, _ []byte) ([]byte, error) { return os.ReadFile(path) }
