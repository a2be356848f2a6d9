//go:build linux

package lanetcd_test

import (
	"testing"

	"github.com/allex-go/allex/internal/e2e"
)

func TestMain(m *testing.M) { e2e.Main(m, "../..", e2e.HelperMain) }
