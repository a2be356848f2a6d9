//go:build linux

// Fault tests of the real binaries on loopback: a master killed with
// SIGKILL or frozen (its keeper fences its children), a LAN manager
// restarted under load, a LAN manager that stops answering, needs churned
// while children crash, and two masters given one state dir, one socket
// or one machine id.

package faults

import (
	"testing"

	"github.com/allex-go/allex/internal/e2e"
)

func TestMain(m *testing.M) { e2e.Main(m, "../..", e2e.HelperMain) }
