package lanmanager

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// batchConn is a link's connection. While its writer holds it corked, the
// frames written collect in a buffer and leave in one write when it is
// flushed: a batch that grants a master many needs costs one system call,
// not one per frame. Writes from other goroutines (the reader's pongs)
// join the buffer while it is corked and go straight out otherwise.
type batchConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
	writes int // to the connection, for tests
}

// maxKeptBuffer is the largest buffer a link keeps between batches.
const maxKeptBuffer = 64 << 10

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	c.writes++
	return c.Conn.Write(p)
}

func (c *batchConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// flush uncorks the connection and writes what collected.
func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) == 0 {
		return nil
	}
	c.writes++
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > maxKeptBuffer {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// batchingWriter hands the WebSocket upgrade a batchConn when it hijacks
// the connection.
type batchingWriter struct {
	http.ResponseWriter
	conn *batchConn
}

func (w *batchingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &batchConn{Conn: conn}
	return w.conn, brw, nil
}
