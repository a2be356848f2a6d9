package agent

import (
	"context"
	"testing"
	"time"
)

func TestTrimAfterBursts(t *testing.T) {
	const quiet = 30 * time.Millisecond
	tests := []struct {
		name   string
		bursts []int // starts per burst, each followed by a quiet spell
		want   []int // trims, by burst size
	}{
		{"small bursts are left alone", []int{1, 4}, nil},
		{"a burst trims once, after it ends", []int{5}, []int{5}},
		{"each burst counts anew", []int{6, 2, 5}, []int{6, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			starts := make(chan struct{})
			trims := make(chan int, 8)
			done := make(chan struct{})
			go func() {
				defer close(done)
				trimAfterBursts(ctx, starts, quiet, 5, func(n int) { trims <- n })
			}()
			for _, b := range tt.bursts {
				for range b {
					starts <- struct{}{}
				}
				time.Sleep(3 * quiet)
			}
			cancel()
			<-done
			close(trims)
			var got []int
			for n := range trims {
				got = append(got, n)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("trims %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("trims %v, want %v", got, tt.want)
				}
			}
		})
	}
}
