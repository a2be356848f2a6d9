package lanmanager_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
	"github.com/gorilla/websocket"
)

// TestFenceByHowLinkEnds: the socket layer reads how a master's link
// ended, and that decides when its copies end (lanwire/fencing.go): its
// service stays published and its need is not offered to another master
// until then. Each bound is measured on the master's side: the lower one
// from what the master knows (when it closed, or when it sent the last
// ping the LAN manager answered, from which its lease runs) is strict;
// the upper one is loose but tells the rules apart.
func TestFenceByHowLinkEnds(t *testing.T) {
	cfg := fenceConfig()
	lease, margin, exitFence := cfg.Lease, cfg.Margin, cfg.ExitFence
	for _, tc := range []struct {
		name string
		// end ends m1's link and returns the window in which its copies
		// must end.
		end func(m1 *master) (notBefore, before time.Time)
	}{
		{"no close frame", func(m1 *master) (time.Time, time.Time) {
			closed := time.Now()
			// A bare TCP end: the master's process is gone, its keeper
			// kills its children within the exit fence.
			_ = m1.conn.Close()
			m1.expectClosed()
			// The lease rule would end them no earlier than this.
			return closed.Add(exitFence + margin), m1.lastAnswered().Add(lease + margin)
		}},
		{"CloseAlive", func(m1 *master) (time.Time, time.Time) {
			m1.closeWith(lanwire.CloseAlive)
			leaseEnd := m1.lastAnswered().Add(lease + margin)
			return leaseEnd, leaseEnd.Add(3 * time.Second)
		}},
		{"CloseNoCopies", func(m1 *master) (time.Time, time.Time) {
			closing := time.Now()
			m1.closeWith(lanwire.CloseNoCopies)
			// The exit-fence rule would end them no earlier than this.
			return closing, closing.Add(exitFence + margin)
		}},
		{"silent", func(m1 *master) (time.Time, time.Time) {
			// Stop reading (so answering pings) and writing; the TCP
			// connection stays open.
			_ = m1.conn.SetReadDeadline(time.Now())
			m1.expectClosed()
			leaseEnd := m1.lastAnswered().Add(lease + margin)
			return leaseEnd, leaseEnd.Add(3 * time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, cfg)
			e.addNeeds(tcpNeed("w1", "web"))
			m1 := e.connect(t, hello("m1", "web"))
			stopPings := m1.pinging(cfg.Heartbeat)
			m1.publish("w1")
			m2 := e.connect(t, hello("m2", "web"))
			m2.pinging(cfg.Heartbeat)
			m2.expectNeeds()
			down := make(chan time.Time, 1)
			events := e.watch(t)
			go func() {
				select {
				case ev := <-events:
					if ev.Type == adminapi.EventDown && ev.Service.Instance == "w1" {
						down <- time.Now()
					}
				case <-time.After(wait):
				}
				close(down)
			}()
			// The master's lease is renewed by the pongs to its pings.
			for m1.lastAnswered().Equal(m1.base) {
				select {
				case <-m1.pongs:
				case <-time.After(wait):
					t.Fatal("no pong")
				}
			}
			stopPings()

			notBefore, before := tc.end(m1)
			offered := m2.offeredAt("w1")
			if offered.Before(notBefore) {
				t.Fatalf("w1 offered to m2 %v before its fence", notBefore.Sub(offered))
			}
			if !offered.Before(before) {
				t.Fatalf("w1 offered to m2 %v after its fence, not within %v: another fence rule was applied", offered.Sub(notBefore), before.Sub(notBefore))
			}
			at, ok := <-down
			if !ok {
				t.Fatal("no down event for w1")
			}
			if at.Before(notBefore) {
				t.Fatalf("w1 down %v before its fence", notBefore.Sub(at))
			}
			if svcs := e.services(); len(svcs) != 0 {
				t.Fatalf("services after the fence: %+v", svcs)
			}
			if ms := e.machines(); len(ms) != 1 || ms[0].ID != "m2" {
				t.Fatalf("machines after the fence: %+v", ms)
			}
		})
	}
}

// untilClosed returns every frame that arrives before the link ends.
func (m *master) untilClosed() []frame {
	m.t.Helper()
	var out []frame
	for {
		select {
		case f := <-m.frames:
			out = append(out, f)
		case <-m.closed:
			for len(m.frames) > 0 {
				out = append(out, <-m.frames)
			}
			return out
		case <-time.After(wait):
			m.t.Fatal("link not closed")
		}
	}
}

// TestCommitFailure: when a batch cannot be stored, the LAN manager stops
// before anything of that batch leaves it: no frame of it reaches a
// master, the admin call in it fails, Run returns the error, and a
// restart resumes from the last commit.
func TestCommitFailure(t *testing.T) {
	errDisk := errors.New("disk on fire")
	for _, tc := range []struct {
		name string
		// fail says which batch fails.
		fail func(store.Batch) bool
		// act makes that batch happen on m's LAN manager.
		act func(t *testing.T, e *env, m *master)
		// leaked says whether a frame belongs to the failed batch.
		leaked func(f frame) bool
	}{
		{
			"grant",
			func(b store.Batch) bool { return b.Epoch != 0 },
			func(t *testing.T, e *env, m *master) {
				m.send(lanwire.TypeClaim, &lanwire.Claim{Instance: "w1"})
			},
			func(f frame) bool { return f.typ != lanwire.TypeNeeds },
		},
		{
			"admin call",
			func(b store.Batch) bool { _, ok := b.Instances["w2"]; return ok },
			func(t *testing.T, e *env, m *master) {
				err := e.client.AddNeed(context.Background(), tcpNeed("w2", "web"))
				var he *adminclient.HTTPError
				if !errors.As(err, &he) || he.Status != 500 || !strings.Contains(he.Message, errDisk.Error()) {
					t.Fatalf("AddNeed in a failed batch: %v", err)
				}
			},
			func(f frame) bool { return f.typ != lanwire.TypeNeeds || slices.Contains(needNames(f), "w2") },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := store.NewMemory()
			// Set before Run; read by the loop only.
			ms.Fail = func(b store.Batch) error {
				if tc.fail(b) {
					return errDisk
				}
				return nil
			}
			cfg := testConfig()
			cfg.Store = ms
			e := start(t, cfg)
			e.addNeeds(tcpNeed("w1", "web"))
			m := e.connect(t, hello("m1", "web"))
			m.expectNeeds("w1")
			tc.act(t, e, m)
			for _, f := range m.untilClosed() {
				if tc.leaked(f) {
					t.Errorf("%s %+v of the failed batch reached the master", f.typ, f.p)
				}
			}
			if code := m.closeCode(); code != websocket.CloseGoingAway {
				t.Errorf("link closed with %d, want %d", code, websocket.CloseGoingAway)
			}
			select {
			case err := <-e.done:
				if !errors.Is(err, errDisk) {
					t.Fatalf("Run = %v, want the store's error", err)
				}
			case <-time.After(wait):
				t.Fatal("Run did not stop")
			}
			e.cancel()
			e.cancel = nil
			if _, err := e.srv.Needs(); err == nil {
				t.Fatal("a stopped LAN manager answered an admin call")
			}

			// Run has returned: nothing reads Fail any more.
			ms.Fail = nil
			e = start(t, cfg)
			var got []string
			for _, n := range e.needs() {
				got = append(got, n.Need.Instance+"="+n.State)
			}
			if !slices.Equal(got, []string{"w1=pending"}) {
				t.Fatalf("needs after the restart = %v", got)
			}
		})
	}
}
