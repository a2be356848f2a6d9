//go:build linux

// Fault tests of the real binaries on loopback: a master killed with
// SIGKILL, a LAN manager restarted under load, a LAN manager that stops
// answering, and needs churned while children crash.

package faults

import (
	"testing"

	"github.com/allex-go/allex/internal/e2e"
)

func TestMain(m *testing.M) { e2e.Main(m, "../..", e2e.HelperMain) }
