package lanmanager_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestPingsOnlySilentMasters: the LAN manager pings a master that has not
// spoken for a heartbeat, and not one whose own pings keep the link
// checked.
func TestPingsOnlySilentMasters(t *testing.T) {
	cfg := testConfig()
	cfg.Heartbeat = 100 * time.Millisecond
	e := start(t, cfg)
	count := func(m *master) *atomic.Int64 {
		var n atomic.Int64
		m.conn.SetPingHandler(func(data string) error {
			n.Add(1)
			return m.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(wait))
		})
		return &n
	}
	talker := e.connect(t, hello("m1", "web"))
	silent := e.connect(t, hello("m2", "web"))
	talked, heard := count(talker), count(silent)
	talker.pinging(30 * time.Millisecond)
	time.Sleep(15 * cfg.Heartbeat)
	if n := heard.Load(); n < 5 {
		t.Errorf("silent master pinged %d times in 15 heartbeats, want at least 5", n)
	}
	if n := talked.Load(); n > 2 {
		t.Errorf("pinging master pinged back %d times in 15 heartbeats, want at most 2", n)
	}
}

// TestNoPongWhileNotLeading: a LAN manager that no longer surely leads
// renews no master's lease.
func TestNoPongWhileNotLeading(t *testing.T) {
	var leading atomic.Bool
	leading.Store(true)
	cfg := testConfig()
	cfg.Leading = leading.Load
	e := start(t, cfg)
	m := e.connect(t, hello("m1", "web"))
	m.expectPong(m.ping())
	leading.Store(false)
	m.ping()
	select {
	case p := <-m.pongs:
		t.Fatalf("pong %x while not leading", p)
	case <-time.After(500 * time.Millisecond):
	}
	leading.Store(true)
	m.expectPong(m.ping())
}
