// Package strikes owns one small loop: check a condition on a ticker and
// act once it has held a number of times in a row, so that one reading
// (a slow answer, a packet lost) is never enough.
package strikes

import (
	"context"
	"time"
)

// Wait calls cond every period until it has held n times in a row, and
// returns true then, or false once ctx ends.
func Wait(ctx context.Context, every time.Duration, n int, cond func() bool) bool {
	t := time.NewTicker(every)
	defer t.Stop()
	held := 0
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		if !cond() {
			held = 0
			continue
		}
		if held++; held >= n {
			return true
		}
	}
}
