package lanmanager

import (
	"bytes"
	"net"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/lanwire"
)

// TestBatchConn: writes while corked leave in one write at the flush, in
// order; writes while not corked go straight out.
func TestBatchConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &batchConn{Conn: a}
	got := make(chan []byte)
	go func() {
		buf := make([]byte, 64)
		var all []byte
		for len(all) < len("onetwothreefour") {
			n, err := b.Read(buf)
			if err != nil {
				break
			}
			all = append(all, buf[:n]...)
		}
		got <- all
	}()
	c.cork()
	for _, p := range []string{"one", "two", "three"} {
		if n, err := c.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("corked write = %d, %v", n, err)
		}
	}
	if c.writes != 0 {
		t.Fatalf("%d writes while corked", c.writes)
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("four")); err != nil {
		t.Fatal(err)
	}
	if all := <-got; !bytes.Equal(all, []byte("onetwothreefour")) {
		t.Fatalf("peer read %q", all)
	}
	if c.writes != 2 {
		t.Fatalf("%d writes to the connection, want 2 (the batch, then one)", c.writes)
	}
	// An empty flush writes nothing; a failed one reports the error.
	c.cork()
	if err := c.flush(); err != nil || c.writes != 2 {
		t.Fatalf("empty flush: %v, %d writes", err, c.writes)
	}
	b.Close()
	c.cork()
	_, _ = c.Write([]byte("lost"))
	if err := c.flush(); err == nil {
		t.Fatal("flush to a closed peer succeeded")
	}
}

// TestSendQueueBound: a master whose writer falls sendQueue frames behind
// is disconnected with CloseTryAgainLater; the frames before stay queued.
func TestSendQueueBound(t *testing.T) {
	sess := &session{wake: make(chan struct{}, 1), done: make(chan struct{}), live: true}
	log := hclog.NewNullLogger()
	for range sendQueue {
		sess.sendFrame(lanwire.TypeError, &lanwire.Error{Message: "x"}, log)
	}
	select {
	case <-sess.done:
		t.Fatal("disconnected at the bound, not past it")
	default:
	}
	sess.sendFrame(lanwire.TypeError, &lanwire.Error{Message: "one too many"}, log)
	select {
	case <-sess.done:
	default:
		t.Fatal("not disconnected past the bound")
	}
	if sess.closeCode != websocket.CloseTryAgainLater || len(sess.take()) != sendQueue {
		t.Fatalf("close code %d, %d frames queued", sess.closeCode, len(sess.queue))
	}
}
