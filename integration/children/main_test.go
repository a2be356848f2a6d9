//go:build !windows

package children

import (
	"testing"

	"github.com/allex-go/allex/internal/e2e"
)

// TestMain builds the real binaries once; when the test binary runs as a
// child of allexmaster it behaves as helperMain says instead.
func TestMain(m *testing.M) { e2e.Main(m, "../..", helperMain) }
