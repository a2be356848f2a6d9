//go:build !windows

package lan_test

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
)

// percentile is the nearest-rank q-quantile of sorted ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func reportLatencies(b *testing.B, ds []time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(percentile(ds, 0.50)), "p50_ms")
	b.ReportMetric(ms(percentile(ds, 0.99)), "p99_ms")
	b.ReportMetric(ms(ds[len(ds)-1]), "max_ms")
}

// links are the two ways a master links: TLS with its certificate (the
// default) and plain WebSockets (-insecure, laninsecure). Each benchmark
// runs both in turn, so -count alternates them on one machine.
var links = []struct {
	name     string
	insecure bool
}{{"tls", false}, {"plain", true}}

// benchLAN is one LAN manager and one master able to run n needs.
func benchLAN(b *testing.B, n int, insecure bool) (*e2e.LAN, *e2e.Master, *e2e.Watcher) {
	// The kill benchmark kills the same services over and over on purpose,
	// which the crash-loop guard would otherwise slow down.
	lan := e2e.StartLAN(b, e2e.LANOpts{Heartbeat: time.Second, Lease: 5 * time.Second, Extra: []string{"-crashloop-limit", "-1"}, Insecure: insecure})
	w := lan.Watch(b, "")
	m := e2e.StartLANMaster(b, lan, e2e.MasterOpts{MachineID: "m1", Size: n + 10})
	lan.WaitConnected(b, wait, "m1")
	return lan, m, w
}

// firstUp is when the watcher first saw inst up with a pid other than
// notPID, at or after since.
func firstUp(evs []e2e.TimedEvent, inst string, notPID int, since time.Time) (e2e.TimedEvent, bool) {
	for _, ev := range evs {
		if ev.Type == adminapi.EventUp && ev.Service.Instance == inst && ev.Service.PID != notPID && !ev.At.Before(since) {
			return ev, true
		}
	}
	return e2e.TimedEvent{}, false
}

// drain removes the needs and waits until the master runs nothing.
func drain(b *testing.B, lan *e2e.LAN, m *e2e.Master, insts []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	c := lan.Client()
	for _, inst := range insts {
		if err := c.RemoveNeed(ctx, inst); err != nil {
			b.Fatalf("remove %s: %v", inst, err)
		}
	}
	mc := e2e.Client(b, m.Socket)
	e2e.Eventually(b, 2*wait, func() error {
		resp, err := mc.ListProcesses(ctx, &allexv1.ListProcessesRequest{})
		if err != nil {
			return err
		}
		for _, p := range resp.GetProcesses() {
			switch p.GetState() {
			case allexv1.ProcessState_PROCESS_STATE_EXITED, allexv1.ProcessState_PROCESS_STATE_FAILED:
			default:
				return fmt.Errorf("%s still %s", p.GetInstance(), p.GetState())
			}
		}
		return nil
	})
}

// BenchmarkNeedToPublished times each need from the admin API call adding
// it to its "up" event on the watch stream, with one master, over TLS and
// plain links.
func BenchmarkNeedToPublished(b *testing.B) {
	for _, l := range links {
		b.Run(l.name, func(b *testing.B) { needToPublished(b, l.insecure) })
	}
}

func needToPublished(b *testing.B, insecure bool) {
	b.Run("200-at-once", func(b *testing.B) {
		const n, workers = 200, 8
		lan, m, w := benchLAN(b, n, insecure)
		var lat []time.Duration
		var total, adding time.Duration
		b.ResetTimer()
		for it := 0; it < b.N; it++ {
			insts := make([]string, n)
			for i := range insts {
				insts[i] = fmt.Sprintf("a%d-%03d", it, i)
			}
			added := make([]time.Time, n)
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for k := 0; k < workers; k++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), wait)
					defer cancel()
					c := lan.Client()
					for i := k; i < n; i += workers {
						added[i] = time.Now()
						if err := c.AddNeed(ctx, demoNeed(insts[i])); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			adding += time.Since(start)
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			ups := make([]time.Time, n)
			w.WaitFor(b, 5*time.Minute, func(evs []e2e.TimedEvent) error {
				missing := 0
				for i, inst := range insts {
					if ups[i].IsZero() {
						if ev, ok := firstUp(evs, inst, 0, start); ok {
							ups[i] = ev.At
						} else {
							missing++
						}
					}
				}
				if missing > 0 {
					return fmt.Errorf("%d of %d needs not up", missing, n)
				}
				return nil
			})
			last := start
			for i := range insts {
				lat = append(lat, ups[i].Sub(added[i]))
				if ups[i].After(last) {
					last = ups[i]
				}
			}
			total += last.Sub(start)
			b.StopTimer()
			drain(b, lan, m, insts)
			b.StartTimer()
		}
		reportLatencies(b, lat)
		b.ReportMetric(total.Seconds()/float64(b.N), "total_s")
		b.ReportMetric(adding.Seconds()/float64(b.N), "add_s")
	})
	b.Run("one-at-a-time", func(b *testing.B) {
		const n = 200
		lan, m, w := benchLAN(b, n, insecure)
		var lat []time.Duration
		b.ResetTimer()
		for it := 0; it < b.N; it++ {
			insts := make([]string, n)
			for i := range insts {
				insts[i] = fmt.Sprintf("s%d-%03d", it, i)
				added := time.Now()
				lan.AddNeeds(b, demoNeed(insts[i]))
				var up time.Time
				w.WaitFor(b, wait, func(evs []e2e.TimedEvent) error {
					if ev, ok := firstUp(evs, insts[i], 0, added); ok {
						up = ev.At
						return nil
					}
					return fmt.Errorf("%s not up", insts[i])
				})
				lat = append(lat, up.Sub(added))
			}
			b.StopTimer()
			drain(b, lan, m, insts)
			b.StartTimer()
		}
		reportLatencies(b, lat)
	})
}

// BenchmarkKillToRepublished kill -9s running services round robin and
// times each until the watch stream shows the instance up with a new pid.
// Each service is killed once per iteration and only after it has run for
// over a second, as a serving child would have: its master restarts it at
// once, where a child dying within its first second is backed off.
func BenchmarkKillToRepublished(b *testing.B) {
	for _, l := range links {
		b.Run(l.name, func(b *testing.B) { killToRepublished(b, l.insecure) })
	}
}

func killToRepublished(b *testing.B, insecure bool) {
	const services, kills = 100, 100
	lan, _, w := benchLAN(b, services, insecure)
	insts := names("k", services)
	var needs []lanwire.Need
	for _, inst := range insts {
		needs = append(needs, demoNeed(inst))
	}
	lan.AddNeeds(b, needs...)
	cur := lan.WaitServices(b, 2*wait, insts...)
	time.Sleep(1100 * time.Millisecond)
	var lat []time.Duration
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		if it > 0 {
			b.StopTimer()
			time.Sleep(1100 * time.Millisecond)
			b.StartTimer()
		}
		for k := 0; k < kills; k++ {
			inst := insts[k%services]
			old := cur[inst]
			killed := time.Now()
			if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
				b.Fatalf("kill %s pid %d: %v", inst, old.PID, err)
			}
			w.WaitFor(b, wait, func(evs []e2e.TimedEvent) error {
				ev, ok := firstUp(evs, inst, old.PID, killed)
				if !ok {
					return fmt.Errorf("%s not republished after kill of pid %d", inst, old.PID)
				}
				lat = append(lat, ev.At.Sub(killed))
				cur[inst] = ev.Service
				return nil
			})
		}
	}
	reportLatencies(b, lat)
}
