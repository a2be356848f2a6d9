package keeper

// The control socket is a unix SOCK_SEQPACKET socketpair made by the
// master; the keeper's end is its fd 3, and EOF on it means the master is
// gone. Every message is one packet of at most MaxMessage bytes:
//
//	kind  byte
//	id    uint32, little-endian: the master's request id; 0 in events
//	body  by kind; ints are varints, strings uvarint length + bytes,
//	      lists uvarint count + strings
//
// master → keeper
//
//	'S' Start     flags byte (1 fenced, 2/4/8 stdin/stdout/stderr attached),
//	              path, dir, argv list, env list; the attached descriptors
//	              ride along as SCM_RIGHTS, in order          → Started or Failed
//	'L' Lease     until: CLOCK_BOOTTIME ns; replaces the last one
//	'F' Fence     exit fence ns: SIGTERM → SIGKILL once the master is gone
//	'B' Bye       the master stopped everything: kill what is left, exit
//
// keeper → master, in the order they happened
//
//	'R' Ready     version (id 0): the keeper holds the lock and serves
//	's' Started   pid (= its process group)
//	'f' Failed    error text; also the answer to a malformed message
//	'x' Exited    pid, code (-1 if killed by a signal), signal name,
//	              strays byte (id 0); sent after the group was SIGKILLed
//	              and the pid reaped. strays is 1 when the pid exited 0
//	              and processes it started lived on: in its group, or
//	              escaped from it (see strays in reap_linux.go)
//
// A packet that does not parse is logged by the keeper and answered with
// Failed (id 0 if even the header is short); it never ends the keeper.
// Fenced starts are refused until a Lease arrives and once it has run out.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Version is sent in Ready; a client refuses a keeper of another version.
// 2: Exited carries strays.
const Version = 2

// MaxMessage bounds a packet: a Start's argv and env must fit. It stays
// under the default socket send buffer (net.core.wmem_default, 208 KiB),
// which bounds a unix packet.
const MaxMessage = 128 << 10

// Message kinds.
const (
	kindStart   = 'S'
	kindLease   = 'L'
	kindFence   = 'F'
	kindBye     = 'B'
	kindReady   = 'R'
	kindStarted = 's'
	kindFailed  = 'f'
	kindExited  = 'x'
)

// Start flags.
const (
	flagFenced = 1 << 0
	flagStdin  = 1 << 1 // stdout and stderr are the next two bits
)

// message is any message; each kind uses some of the fields.
type message struct {
	kind byte
	id   uint32

	fenced    bool    // Start
	stdio     [3]bool // Start: which of stdin, stdout, stderr are attached
	path, dir string  // Start
	argv, env []string

	n      int64  // Lease: until; Fence: duration; Ready: version
	pid    int    // Started, Exited
	code   int    // Exited
	text   string // Failed: error; Exited: signal
	strays bool   // Exited
}

// appendTo encodes m after b.
func (m *message) appendTo(b []byte) []byte {
	b = append(b, m.kind)
	b = binary.LittleEndian.AppendUint32(b, m.id)
	switch m.kind {
	case kindStart:
		var flags byte
		if m.fenced {
			flags |= flagFenced
		}
		for i, on := range m.stdio {
			if on {
				flags |= flagStdin << i
			}
		}
		b = append(b, flags)
		b = appendString(b, m.path)
		b = appendString(b, m.dir)
		b = appendList(b, m.argv)
		b = appendList(b, m.env)
	case kindLease, kindFence, kindReady:
		b = binary.AppendVarint(b, m.n)
	case kindStarted:
		b = binary.AppendVarint(b, int64(m.pid))
	case kindFailed:
		b = appendString(b, m.text)
	case kindExited:
		b = binary.AppendVarint(b, int64(m.pid))
		b = binary.AppendVarint(b, int64(m.code))
		b = appendString(b, m.text)
		b = appendBool(b, m.strays)
	}
	return b
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendList(b []byte, l []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(l)))
	for _, s := range l {
		b = appendString(b, s)
	}
	return b
}

// headerID returns the request id of a packet too broken to parse, 0 if
// it has none.
func headerID(b []byte) uint32 {
	if len(b) < 5 {
		return 0
	}
	return binary.LittleEndian.Uint32(b[1:5])
}

// parse decodes one packet.
func parse(b []byte) (message, error) {
	if len(b) < 5 {
		return message{}, fmt.Errorf("keeper protocol: packet of %d bytes, shorter than a header", len(b))
	}
	if len(b) > MaxMessage {
		return message{}, fmt.Errorf("keeper protocol: packet of %d bytes, over %d", len(b), MaxMessage)
	}
	m := message{kind: b[0], id: headerID(b)}
	r := reader{b: b[5:]}
	switch m.kind {
	case kindStart:
		flags := r.byte()
		if flags&^(flagFenced|7*flagStdin) != 0 {
			r.fail("unknown start flags %#x", flags)
		}
		m.fenced = flags&flagFenced != 0
		for i := range m.stdio {
			m.stdio[i] = flags&(flagStdin<<i) != 0
		}
		m.path, m.dir = r.string(), r.string()
		m.argv, m.env = r.list(), r.list()
		if r.err == nil {
			r.err = checkStart(&m)
		}
	case kindLease, kindFence, kindReady:
		m.n = r.varint()
	case kindStarted:
		m.pid = r.pid()
	case kindFailed:
		m.text = r.string()
	case kindExited:
		m.pid = r.pid()
		m.code = int(r.varint())
		m.text = r.string()
		m.strays = r.bool()
	case kindBye:
	default:
		return m, fmt.Errorf("keeper protocol: unknown message kind %q", m.kind)
	}
	if r.err == nil && len(r.b) > 0 {
		r.fail("%d bytes after the %q body", len(r.b), m.kind)
	}
	return m, r.err
}

// checkStart refuses what exec could not take: NUL bytes, no program.
func checkStart(m *message) error {
	if m.path == "" {
		return errors.New("keeper protocol: start without a path")
	}
	all := append([]string{m.path, m.dir}, m.argv...)
	for _, s := range append(all, m.env...) {
		if strings.IndexByte(s, 0) >= 0 {
			return errors.New("keeper protocol: start with a NUL byte in path, dir, argv or env")
		}
	}
	return nil
}

// reader decodes a body; the first error sticks and zeroes what follows.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("keeper protocol: "+format, args...)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail("body ends early")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) bool() bool {
	switch c := r.byte(); c {
	case 0, 1:
		return c == 1
	default:
		r.fail("bool byte %#x", c)
		return false
	}
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) pid() int {
	v := r.varint()
	if r.err == nil && (v <= 0 || v > 1<<22) {
		r.fail("pid %d out of range", v)
		return 0
	}
	return int(v)
}

// count reads a length that the rest of the body must hold at least
// min(1, each) bytes per unit of, so a forged count cannot allocate.
func (r *reader) count(each int) int {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad length")
		return 0
	}
	r.b = r.b[n:]
	if v > uint64(len(r.b)/each) {
		r.fail("length %d past the end of the packet", v)
		return 0
	}
	return int(v)
}

func (r *reader) string() string {
	n := r.count(1)
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) list() []string {
	// Every string takes at least its length byte.
	n := r.count(1)
	if n == 0 {
		return nil
	}
	l := make([]string, 0, n)
	for range n {
		l = append(l, r.string())
	}
	if r.err != nil {
		return nil
	}
	return l
}
