//go:build linux

package spawner

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ListenProbe tells whether a TCP port has a listener on 127.0.0.1 by
// asking the kernel's socket table (sock_diag, as ss(8) does) instead of
// connecting to it. One question is two system calls on a netlink socket
// the probe keeps: a connect probe took a socket, a loopback handshake,
// a reset, and an accept and a write in the child, and its system calls
// were a ninth of the master's CPU while 500 children started. Share one
// among the supervisors of an agent; it is safe for concurrent use.
//
// It answers what a connect to 127.0.0.1:port would: a listener bound to
// 127.0.0.1, to the wildcard address, or to the IPv6 wildcard without
// IPV6_V6ONLY is found, one bound to another address is not.
type ListenProbe struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf [512]byte
}

// listenProbeTimeout bounds one answer; the kernel answers inside the
// request's send, so only a broken socket ever waits.
const listenProbeTimeout = time.Second

// NewListenProbe opens the probe's netlink socket and checks the kernel
// answers its questions (inet_diag for TCP may be a module that is not
// there).
func NewListenProbe() (*ListenProbe, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("listen probe: netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(listenProbeTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("listen probe: %w", err)
	}
	p := &ListenProbe{fd: fd}
	// Port 0 never has a listener: a working kernel says so.
	if _, err := p.Listening(0); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return p, nil
}

// Close closes the netlink socket; later questions fail.
func (p *ListenProbe) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	return err
}

var errProbeClosed = errors.New("listen probe closed")

// Layout of the messages (linux/inet_diag.h, linux/netlink.h).
const (
	nlHeaderLen   = unix.SizeofNlMsghdr
	diagReqLen    = 56 // struct inet_diag_req_v2
	diagMsgMinLen = 56 // struct inet_diag_msg up to the socket id
	tcpListen     = 10 // TCP_LISTEN, a socket state
)

// Listening reports whether port has a listener on 127.0.0.1. It is safe
// for concurrent use; the bench polls it for every system it measures.
func (p *ListenProbe) Listening(port uint16) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return false, errProbeClosed
	}
	p.seq++
	var req [nlHeaderLen + diagReqLen]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	// No NLM_F_DUMP: the kernel looks the socket up as it would for an
	// incoming SYN to 127.0.0.1:port, which finds the listener.
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], p.seq)
	r := req[nlHeaderLen:]
	r[0] = unix.AF_INET
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<tcpListen)
	id := r[8:] // struct inet_diag_sockid
	binary.BigEndian.PutUint16(id[0:], port)
	copy(id[4:8], []byte{127, 0, 0, 1})
	ne.PutUint32(id[40:], ^uint32(0)) // INET_DIAG_NOCOOKIE
	ne.PutUint32(id[44:], ^uint32(0))
	if err := unix.Sendto(p.fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return false, fmt.Errorf("listen probe: send: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(p.fd, p.buf[:], 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("listen probe: receive: %w", err)
		}
		m := p.buf[:n]
		if n < nlHeaderLen || int(ne.Uint32(m[0:])) > n {
			return false, fmt.Errorf("listen probe: short answer (%d bytes)", n)
		}
		if ne.Uint32(m[8:]) != p.seq {
			continue // the answer to a question given up on
		}
		switch ne.Uint16(m[4:]) {
		case unix.NLMSG_ERROR:
			if n < nlHeaderLen+4 {
				return false, fmt.Errorf("listen probe: short error (%d bytes)", n)
			}
			switch errno := unix.Errno(-int32(ne.Uint32(m[nlHeaderLen:]))); errno {
			case unix.ENOENT:
				return false, nil
			default:
				return false, fmt.Errorf("listen probe: %w", errno)
			}
		case unix.SOCK_DIAG_BY_FAMILY:
			if n < nlHeaderLen+diagMsgMinLen {
				return false, fmt.Errorf("listen probe: short socket record (%d bytes)", n)
			}
			// A socket of that port in another state (one closing) does
			// not accept.
			return m[nlHeaderLen+1] == tcpListen, nil
		default:
			return false, fmt.Errorf("listen probe: unexpected answer type %d", ne.Uint16(m[4:]))
		}
	}
}
