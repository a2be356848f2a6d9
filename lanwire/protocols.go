package lanwire

import (
	"fmt"
	"slices"
)

// Protocol names: the keys of Ports, of a child's ports and of the
// master's port ranges. The master and the LAN share them, so they are
// declared here once.
const (
	ProtoTCP  = "tcp"
	ProtoHTTP = "http"
	ProtoWS   = "ws"
)

// Protocols are the protocol names, in their customary display order.
var Protocols = []string{ProtoTCP, ProtoHTTP, ProtoWS}

// CheckProtocol refuses a name that is not one of Protocols.
func CheckProtocol(p string) error {
	if !slices.Contains(Protocols, p) {
		return fmt.Errorf("unknown protocol %q (want tcp, http or ws)", p)
	}
	return nil
}
