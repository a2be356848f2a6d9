package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
)

// Instance name prefixes of the two kinds of needs.
const (
	burstPrefix  = "burst-"
	singlePrefix = "single-"
)

// up is when the watch stream showed an instance up, and where.
type up struct {
	at      time.Time
	machine string
}

// tracker follows /v1/services/watch, as a user would, and keeps when
// each instance was first and last seen up.
type tracker struct {
	mu        sync.Mutex
	first     map[string]up
	last      map[string]up
	burstUp   int
	lastBurst time.Time
	// restarts counts streams the LAN manager ended (a watcher that falls
	// behind is cut off); instances first seen in the next stream's
	// listing get that later time.
	restarts int
	changed  chan struct{}
}

func newTracker() *tracker {
	return &tracker{first: map[string]up{}, last: map[string]up{}, changed: make(chan struct{}, 1)}
}

// run watches until ctx is done, opening the stream again when it ends.
// started is closed once the first stream is open.
func (t *tracker) run(ctx context.Context, c *http.Client, url, token string, started chan<- struct{}) {
	once := sync.OnceFunc(func() { close(started) })
	for ctx.Err() == nil {
		err := t.watch(ctx, c, url, token, once)
		if ctx.Err() != nil {
			return
		}
		t.mu.Lock()
		t.restarts++
		t.mu.Unlock()
		fmt.Fprintln(os.Stderr, "scale: watch stream ended, opening it again:", err)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// watch reads one stream; opened is called when its headers arrived.
func (t *tracker) watch(ctx context.Context, c *http.Client, url, token string, opened func()) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/services/watch?module="+module, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("watch: HTTP %s", resp.Status)
	}
	opened()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var ev adminapi.ServiceEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("watch: decode: %w", err)
		}
		t.event(ev, time.Now())
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("the LAN manager ended the stream")
}

func (t *tracker) event(ev adminapi.ServiceEvent, at time.Time) {
	if ev.Type != adminapi.EventUp {
		return
	}
	inst := ev.Service.Instance
	u := up{at: at, machine: ev.Service.MachineID}
	t.mu.Lock()
	if _, seen := t.first[inst]; !seen {
		t.first[inst] = u
		if strings.HasPrefix(inst, burstPrefix) {
			t.burstUp++
			t.lastBurst = at
		}
	}
	t.last[inst] = u
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// waitFor returns once cond (called with t.mu held) holds, or false when
// deadline passes or ctx is done first.
func (t *tracker) waitFor(ctx context.Context, deadline time.Time, cond func() bool) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		t.mu.Lock()
		ok := cond()
		t.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-t.changed:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
