package lanmanager_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
	"github.com/gorilla/websocket"
)

// benchMaster claims everything it is offered and reports every grant as
// spawned on a live loopback port, until the link closes.
func benchMaster(conn *websocket.Conn, port uint16) {
	send := func(typ string, p any) error {
		b, err := lanwire.Encode(typ, p)
		if err != nil {
			return err
		}
		return conn.WriteMessage(websocket.TextMessage, b)
	}
	claimed := map[string]bool{}
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		_, p, err := lanwire.Decode(data)
		if err != nil {
			return
		}
		switch f := p.(type) {
		case *lanwire.Needs:
			for _, n := range f.Needs {
				if !claimed[n.Instance] {
					claimed[n.Instance] = true
					if send(lanwire.TypeClaim, &lanwire.Claim{Instance: n.Instance}) != nil {
						return
					}
				}
			}
		case *lanwire.Grant:
			err := send(lanwire.TypeSpawned, &lanwire.Spawned{Instance: f.Need.Instance, Epoch: f.Epoch, PID: 1000, Ports: lanwire.Ports{"tcp": port}, StartedAt: time.Now()})
			if err != nil {
				return
			}
		}
	}
}

// BenchmarkNeedToPublished measures one need's way from AddNeed to its
// published "up" event: offer, claim, grant, spawned, port check, store.
// The bolt case includes the fsyncs of the transactions (need, grant,
// publication) on its way.
func BenchmarkNeedToPublished(b *testing.B) {
	b.Run("bolt", func(b *testing.B) { benchNeedToPublished(b, true) })
	b.Run("memory", func(b *testing.B) { benchNeedToPublished(b, false) })
}

func benchNeedToPublished(b *testing.B, bolt bool) {
	cfg := testConfig()
	if bolt {
		cfg.DataDir = b.TempDir()
	}
	e := start(b, cfg)
	port := listener(b)
	conn, _, err := e.dial(testToken)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	h := hello("bench", "web")
	hb, err := lanwire.Encode(lanwire.TypeHello, &h)
	if err != nil {
		b.Fatal(err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, hb); err != nil {
		b.Fatal(err)
	}
	go benchMaster(conn, port)
	_, events, cancel := e.srv.Watch("web")
	defer cancel()

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		inst := fmt.Sprintf("b%d", i)
		t0 := time.Now()
		if err := e.srv.AddNeed(tcpNeed(inst, "web")); err != nil {
			b.Fatal(err)
		}
		for done := false; !done; {
			select {
			case ev, ok := <-events:
				if !ok {
					b.Fatal("watch ended")
				}
				done = ev.Type == adminapi.EventUp && ev.Service.Instance == inst
			case <-time.After(wait):
				b.Fatalf("%s not published", inst)
			}
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
