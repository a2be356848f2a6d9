package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/allex-go/allex/lanmanager/adminclient"
)

// singles adds single needs at a steady rate, each in its own request
// so that a slow answer does not delay the next one.
type singles struct {
	c     *adminclient.Client
	rate  float64
	limit int64

	wg     sync.WaitGroup
	mu     sync.Mutex
	at     map[string]time.Time // instance → when its request started, once it succeeded
	failed int
}

func newSingles(c *adminclient.Client, rate float64, limit int64) *singles {
	return &singles{c: c, rate: rate, limit: limit, at: map[string]time.Time{}}
}

// run adds needs until stop is done or limit were started; each request
// is bounded by reqCtx.
func (s *singles) run(stop, reqCtx context.Context) {
	if s.rate <= 0 {
		return
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / s.rate))
	defer t.Stop()
	for k := int64(0); k < s.limit; k++ {
		select {
		case <-stop.Done():
			return
		case <-t.C:
		}
		s.wg.Add(1)
		go s.add(reqCtx, fmt.Sprintf("%s%06d", singlePrefix, k))
	}
}

func (s *singles) add(ctx context.Context, inst string) {
	defer s.wg.Done()
	at := time.Now()
	err := s.c.AddNeed(ctx, need(inst))
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "scale: single need:", err)
		}
		s.failed++
		return
	}
	s.at[inst] = at
}

// wait returns once every request run started has ended.
func (s *singles) wait() { s.wg.Wait() }

// added is when each single need was added (after wait).
func (s *singles) added() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.at
}

// allUp says whether every single need added is up.
func (s *singles) allUp(first map[string]up) bool {
	for inst := range s.added() {
		if _, ok := first[inst]; !ok {
			return false
		}
	}
	return true
}
