//go:build !linux

package portoffice

import (
	"net"
	"net/netip"
	"strconv"
)

// listenProbe reports whether a TCP listener can be opened on host:port
// right now.
func listenProbe(host netip.Addr, port uint16) error {
	h := ""
	if host.IsValid() {
		h = host.String()
	}
	l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(int(port))))
	if err != nil {
		return err
	}
	return l.Close()
}
