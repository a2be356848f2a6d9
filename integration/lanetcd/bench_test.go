//go:build !windows

package lanetcd_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanwire"
)

// BenchmarkFailover kills the leader b.N times (kill -9, default
// -leader-ttl) while a master runs on the LAN, and times from the kill
// until a need added at the kill is published by the new leader:
//
//	go test ./integration/lanetcd -run NONE -bench Failover -benchtime 10x
func BenchmarkFailover(b *testing.B) {
	store, _ := etcdLAN(b, "/bench")
	lms := []*lm{startLM(b, store, "a"), startLM(b, store, "b")}
	lms[0].WaitOutput("elected: leading the LAN", 30*time.Second)
	leader := 0
	startMaster(b, lms...)
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		inst := fmt.Sprintf("f%03d", i)
		killed := time.Now()
		if err := lms[leader].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		next := 1 - leader
		e2e.Eventually(b, 30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			c := lms[next].client()
			if err := c.AddNeed(ctx, lanwire.Need{Instance: inst, Module: "demo"}); err != nil && !strings.Contains(err.Error(), "already") {
				return err
			}
			if _, err := c.Service(ctx, inst); err != nil {
				return err
			}
			return nil
		})
		took = append(took, time.Since(killed))
		// The killed one comes back, on its address, as the standby.
		_ = lms[leader].Wait(10 * time.Second)
		lms[leader].start(b)
		leader = next
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "ms-p50")
	b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "ms-max")
	b.Logf("kill -9 of the leader → a need added then published by the new leader, %d failovers: %v", len(took), took)
}
