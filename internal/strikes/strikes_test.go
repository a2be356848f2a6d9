package strikes

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// TestWait: a break in the run starts the count again; the n-th reading
// in a row ends the wait; an ended context ends it unmet.
func TestWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		readings := []bool{true, false, true, true, true, false}
		calls := 0
		start := time.Now()
		ok := Wait(context.Background(), time.Second, 3, func() bool { calls++; return readings[calls-1] })
		if !ok || calls != 5 || time.Since(start) != 5*time.Second {
			t.Fatalf("Wait = %v after %d readings and %v, want true after 5 and 5s", ok, calls, time.Since(start))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if Wait(ctx, time.Second, 3, func() bool { return false }) {
			t.Fatal("met with a condition that never holds")
		}
	})
}
