//go:build linux

package portoffice

import (
	"net"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// listenProbe reports whether a TCP listener can be opened on host:port
// right now, with the system calls a child's listen makes (SO_REUSEADDR,
// bind, listen) and nothing else. net.Listen also registered each socket
// with the netpoller and read its address back: a start of 500 children
// spent 6% of the master's CPU in it. An invalid host is the wildcard,
// dual-stack where IPv6 exists, as net.Listen has it.
func listenProbe(host netip.Addr, port uint16) error {
	if !host.IsValid() {
		err := bindListen(unix.AF_INET6, &unix.SockaddrInet6{Port: int(port)}, true)
		if err != unix.EAFNOSUPPORT {
			return err
		}
		return bindListen(unix.AF_INET, &unix.SockaddrInet4{Port: int(port)}, false)
	}
	switch {
	case host.Is4() || host.Is4In6():
		return bindListen(unix.AF_INET, &unix.SockaddrInet4{Port: int(port), Addr: host.Unmap().As4()}, false)
	case host.Zone() == "":
		return bindListen(unix.AF_INET6, &unix.SockaddrInet6{Port: int(port), Addr: host.As16()}, false)
	}
	// A link-local address with a zone: rare enough for the net package
	// to resolve the zone.
	l, err := net.Listen("tcp", net.JoinHostPort(host.String(), strconv.Itoa(int(port))))
	if err != nil {
		return err
	}
	return l.Close()
}

func bindListen(family int, sa unix.Sockaddr, dualStack bool) (err error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if err == unix.EAFNOSUPPORT {
			return err
		}
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if dualStack {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		return os.NewSyscallError("listen", err)
	}
	return nil
}
