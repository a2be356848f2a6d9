package lanwire_test

import (
	"strings"
	"testing"

	"github.com/allex-go/allex/lanwire"
)

// TestCheckProtocol: the three names pass; anything else, case variants
// and the empty name included, is refused naming it and the choices.
func TestCheckProtocol(t *testing.T) {
	for _, p := range lanwire.Protocols {
		if err := lanwire.CheckProtocol(p); err != nil {
			t.Errorf("CheckProtocol(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "TCP", "udp", "tcp "} {
		err := lanwire.CheckProtocol(p)
		if err == nil || !strings.Contains(err.Error(), `unknown protocol "`+p+`" (want tcp, http or ws)`) {
			t.Errorf("CheckProtocol(%q) = %v", p, err)
		}
	}
}
