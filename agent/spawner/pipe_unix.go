//go:build unix

package spawner

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// chunk is the most one read takes from a pipe: a quarter of a grown
// one, so that the master makes fewer, larger reads and writes per byte
// logged than with reads of a default pipe.
const chunk = 256 << 10

// defaultPipe is the kernel's default pipe capacity.
const defaultPipe = 64 << 10

// drainMax bounds what a pump copies after finish, enough for a full pipe
// grown to pipeSize.
const drainMax = 4 * pipeSize

// chunks are the pumps' buffers, held only while one reads and writes:
// a pump waiting for its child to write holds none.
var chunks = sync.Pool{New: func() any { b := make([]byte, chunk); return &b }}

// copyPipe copies r to c until EOF, or, once finish has set its deadline,
// until the pipe is empty. It waits for data through the runtime poller,
// so it pins no thread while the child is quiet; on Linux, where it only
// copies a pipe the log poller refused, it blocks in read.
func copyPipe(r *os.File, c *copier) {
	rc, err := r.SyscallConn()
	if err != nil {
		c.log.Error("cannot read the child's output", "error", err)
		return
	}
	grown := false
	for {
		var buf *[]byte
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			buf = chunks.Get().(*[]byte)
			n, rerr = read(int(fd), *buf)
			if rerr == unix.EAGAIN {
				chunks.Put(buf)
				return false
			}
			// A read that takes a whole default pipe found it full: the
			// child writes fast, and a bigger pipe lets it write on
			// while this write goes to disk.
			if n >= defaultPipe && !grown {
				grown = true
				growPipe(int(fd))
			}
			return true
		})
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				drain(rc, c)
			} else {
				c.log.Error("cannot read the child's output", "error", err)
			}
			return
		}
		if n > 0 {
			c.write((*buf)[:n])
		}
		chunks.Put(buf)
		if n == 0 {
			if rerr != nil {
				c.log.Error("cannot read the child's output", "error", rerr)
			}
			return
		}
	}
}

// drain copies what the pipe holds, without waiting for more.
func drain(rc syscall.RawConn, c *copier) {
	buf := chunks.Get().(*[]byte)
	defer chunks.Put(buf)
	_ = rc.Control(func(fd uintptr) {
		for total := 0; total < drainMax; {
			n, _ := read(int(fd), *buf)
			if n == 0 {
				return
			}
			c.write((*buf)[:n])
			total += n
		}
	})
}

// read reads once; n is 0 on error.
func read(fd int, b []byte) (int, error) {
	n, err := unix.Read(fd, b)
	for err == unix.EINTR {
		n, err = unix.Read(fd, b)
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// stopCopy ends copyPipe once the pipe is empty. A pipe outside the
// runtime poller (on Linux, one the log poller refused) takes no
// deadline; its pump reads until EOF.
func (p *pump) stopCopy() { _ = p.r.SetReadDeadline(time.Now()) }
