package lanlink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/allex-go/allex/lanwire"
)

// fakeClock is a boot-time clock that moves 1ms at every read.
func fakeClock() func() time.Duration {
	var n atomic.Int64
	n.Store(int64(time.Hour))
	return func() time.Duration { return time.Duration(n.Add(int64(time.Millisecond))) }
}

// TestRenewedFromPingSendTime: the pong to a ping renews the lease from
// the ping's send time; a pong whose payload was not a ping of this
// session (garbage, the future, before the hello) renews nothing.
func TestRenewedFromPingSendTime(t *testing.T) {
	checkLeaks(t)
	s := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 20)
		for _, p := range [][]byte{[]byte("junk"), lanwire.PingPayload(100 * time.Hour), lanwire.PingPayload(time.Minute)} {
			_ = c.WriteControl(websocket.PongMessage, p, time.Now().Add(time.Second))
		}
		// gorilla's default ping handler answers each ping with its payload.
		_ = drain(c, nil)
	})
	l, rec := newLink(t, s, func(c *Config) { c.Clock = fakeClock() })
	start(t, l)
	eventually(t, "renewals", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.renewals) >= 3
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.welcomes) != 1 {
		t.Fatalf("welcomes = %v", rec.welcomes)
	}
	prev := rec.welcomes[0]
	for _, r := range rec.renewals {
		if r <= prev || r > 2*time.Hour {
			t.Fatalf("renewals %v after hello at %v: each a later ping's send time", rec.renewals, rec.welcomes[0])
		}
		prev = r
	}
}

// TestCloseCodeSaysWhetherCopiesRun: a master that still holds copies
// closes with CloseAlive, so the LAN manager counts its lease.
func TestCloseCodeSaysWhetherCopiesRun(t *testing.T) {
	checkLeaks(t)
	closed := make(chan int, 1)
	s := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 0)
		var ce *websocket.CloseError
		if err := drain(c, nil); errors.As(err, &ce) {
			closed <- ce.Code
		}
	})
	l, rec := newLink(t, s)
	rec.holds.Store(true)
	cancel := start(t, l)
	eventually(t, "connected", func() bool { return l.State() == StateConnected })
	cancel()
	select {
	case code := <-closed:
		if code != lanwire.CloseAlive {
			t.Fatalf("close code = %d, want CloseAlive", code)
		}
	case <-time.After(waitLimit):
		t.Fatal("no close frame")
	}
}

// TestHeldOpenWhileCopiesRun: when the close frame cannot be written (the
// LAN manager stopped reading), a master that holds copies does not end
// the connection, which the LAN manager would take for its death; it
// ends it once no copy runs.
func TestHeldOpenWhileCopiesRun(t *testing.T) {
	type end struct {
		at   time.Time
		code int
	}
	ended := make(chan end, 1)
	s := newLAN(t, func(n int, c *websocket.Conn) {
		if n > 1 {
			_ = drain(c, nil)
			return
		}
		welcome(t, c, n, 1000)
		// Stop reading until the link's buffers are full and its session
		// has ended, then read to the end of the connection.
		time.Sleep(4500 * time.Millisecond)
		_ = c.SetReadDeadline(time.Now().Add(waitLimit))
		c.SetPingHandler(func(string) error { return nil })
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				e := end{at: time.Now()}
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					e.code = ce.Code
				}
				ended <- e
				return
			}
		}
	})
	l, rec := newLink(t, s)
	rec.holds.Store(true)
	start(t, l)
	eventually(t, "connected", func() bool { return l.State() == StateConnected })
	connected := time.Now()
	// About 40 MB queued: more than the kernel buffers both ways hold.
	big := lanwire.Capacity{FreePorts: map[string]int{}}
	for i := range 700 {
		big.FreePorts[fmt.Sprintf("port-%06d", i)] = i
	}
	for range QueueSize - 1 {
		if err := l.Send(lanwire.TypeCapacity, big); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	eventually(t, "session ended", func() bool { return l.State() != StateConnected })
	// The server reads again from 4.5s on: a connection ended before
	// shows by then.
	time.Sleep(time.Until(connected.Add(6 * time.Second)))
	released := time.Now()
	rec.holds.Store(false)
	select {
	case e := <-ended:
		switch {
		case e.code == lanwire.CloseAlive || e.code == lanwire.CloseNoCopies:
			t.Fatalf("the close frame got through (code %d): the buffers were not full, the test proves nothing", e.code)
		case e.at.Before(released):
			t.Fatalf("connection ended (code %d) %v before the copies were gone", e.code, released.Sub(e.at))
		}
	case <-time.After(waitLimit):
		t.Fatal("connection still open after the copies were gone")
	}
}

// TestFramesDuringHandshakeFollowHello: what the master sends after its
// hello was built and before the welcome (a copy that ended meanwhile)
// goes out on that session after the hello, not dropped: the hello was a
// snapshot, and the LAN manager would keep the ended copy.
func TestFramesDuringHandshakeFollowHello(t *testing.T) {
	checkLeaks(t)
	got := make(chan []byte, 8)
	s := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 0)
		_ = drain(c, got)
	})
	l, rec := newLink(t, s)
	sendErr := make(chan error, 1)
	rec.onHello = func() {
		sendErr <- l.Send(lanwire.TypeDown, &lanwire.Down{Instance: "web1", Epoch: 3, Reason: "ended while reconnecting"})
	}
	start(t, l)
	if err := <-sendErr; err != nil {
		t.Fatalf("Send while the hello is on its way: %v", err)
	}
	select {
	case b := <-got:
		if typ, _, err := lanwire.Decode(b); err != nil || typ != lanwire.TypeDown {
			t.Fatalf("first frame after the hello = %s (%v), want the down", typ, err)
		}
	case <-time.After(waitLimit):
		t.Fatal("the down sent during the handshake never arrived")
	}
}

// TestRetriesEveryHeartbeatWhileHoldingCopies: a master that holds copies
// does not back off past a heartbeat between attempts, so a LAN manager
// that restarts within the lease finds it back before its fence.
func TestRetriesEveryHeartbeatWhileHoldingCopies(t *testing.T) {
	checkLeaks(t)
	var mu sync.Mutex
	var attempts []time.Time
	s := newLAN(t, func(n int, c *websocket.Conn) {
		if n == 1 {
			welcome(t, c, n, 100)
			time.Sleep(200 * time.Millisecond)
		}
		// Every later attempt fails after its hello.
	})
	s.onAttempt = func() {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, time.Now())
	}
	l, rec := newLink(t, s, func(c *Config) {
		c.BackoffInitial = 50 * time.Millisecond
		c.BackoffMax = 10 * time.Second
	})
	rec.holds.Store(true)
	start(t, l)
	// Cleanups run last first: the link stops without holding anything.
	t.Cleanup(func() { rec.holds.Store(false) })
	time.Sleep(3 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) < 10 {
		t.Fatalf("%d attempts in 3s, want one at least every heartbeat (100ms)", len(attempts))
	}
	for i := 5; i < len(attempts); i++ {
		if gap := attempts[i].Sub(attempts[i-1]); gap > 400*time.Millisecond {
			t.Fatalf("attempt %d came %v after the one before: backed off past the heartbeat", i, gap)
		}
	}
}

// TestStopsWhileLANManagerPings: a stop ends the session at once even
// when the LAN manager keeps pinging: its pings move the read deadline,
// so waking the reader with a deadline alone left Run hanging.
func TestStopsWhileLANManagerPings(t *testing.T) {
	checkLeaks(t)
	s := newLAN(t, func(n int, c *websocket.Conn) {
		welcome(t, c, n, 0)
		go func() { _ = drain(c, nil) }()
		deny, _ := lanwire.Encode(lanwire.TypeDeny, &lanwire.Deny{Instance: "w", Reason: "busy"})
		for {
			if c.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)) != nil {
				return
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if c.WriteMessage(websocket.TextMessage, deny) != nil {
				return
			}
		}
	})
	for range 30 {
		l, _ := newLink(t, s)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		eventually(t, "connected", func() bool { return l.State() == StateConnected })
		time.Sleep(5 * time.Millisecond)
		cancel()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatal("Run did not return within 3s of its stop while the LAN manager pinged")
		}
	}
}
