package lanmanager

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
)

// TestEncodeQueued: the event in hand and those already queued go out in
// order, at most watchBatch per call, and a closed channel is reported
// after the events queued before the close.
func TestEncodeQueued(t *testing.T) {
	ev := func(i int) adminapi.ServiceEvent {
		return adminapi.ServiceEvent{Type: adminapi.EventUp, Service: lanwire.ServiceRecord{Instance: fmt.Sprintf("s%03d", i)}}
	}
	for _, tc := range []struct {
		name       string
		queued     int
		close      bool
		wantLines  int
		wantClosed bool
	}{
		{"nothing queued", 0, false, 1, false},
		{"some queued", 5, false, 6, false},
		{"more than a batch", watchBatch + 10, false, watchBatch, false},
		{"queued then closed", 3, true, 4, true},
		{"closed at once", 0, true, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan adminapi.ServiceEvent, tc.queued+1)
			for i := 1; i <= tc.queued; i++ {
				ch <- ev(i)
			}
			if tc.close {
				close(ch)
			}
			var buf bytes.Buffer
			closed, err := encodeQueued(json.NewEncoder(&buf), ev(0), ch)
			if err != nil || closed != tc.wantClosed {
				t.Fatalf("closed %v, err %v; want closed %v", closed, err, tc.wantClosed)
			}
			lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			if len(lines) != tc.wantLines {
				t.Fatalf("%d events written, want %d", len(lines), tc.wantLines)
			}
			for i, l := range lines {
				var got adminapi.ServiceEvent
				if err := json.Unmarshal([]byte(l), &got); err != nil || got.Service.Instance != ev(i).Service.Instance {
					t.Fatalf("event %d = %q (%v), want %s", i, l, err, ev(i).Service.Instance)
				}
			}
			if left := len(ch); !tc.close && left != tc.queued+1-tc.wantLines {
				t.Errorf("%d events left queued, want %d", left, tc.queued+1-tc.wantLines)
			}
		})
	}
}

// TestWatchBacklog: events that do not fit a watcher's channel wait in
// the loop and reach it in order; a watcher further behind than the
// backlog allows is cut off, and the others are not.
func TestWatchBacklog(t *testing.T) {
	l := &loop{watchers: map[*watcher]struct{}{}, backlogCap: 16}
	slow := &watcher{ch: make(chan adminapi.ServiceEvent, 2)}
	stuck := &watcher{ch: make(chan adminapi.ServiceEvent, 2)}
	l.watchers[slow], l.watchers[stuck] = struct{}{}, struct{}{}
	ev := func(i int) adminapi.ServiceEvent {
		return adminapi.ServiceEvent{Type: adminapi.EventUp, Service: lanwire.ServiceRecord{Instance: fmt.Sprintf("s%03d", i)}}
	}
	var got []string
	for i := range 30 {
		l.emit(ev(i))
		if i%3 == 2 {
			// slow reads two events for every three emitted.
			for range 2 {
				got = append(got, (<-slow.ch).Service.Instance)
			}
			l.flushWatchers()
		}
	}
	for {
		l.flushWatchers()
		select {
		case e, ok := <-slow.ch:
			if !ok {
				t.Fatalf("slow watcher cut off after %d events", len(got))
			}
			got = append(got, e.Service.Instance)
			continue
		default:
		}
		break
	}
	if len(got) != 30 {
		t.Fatalf("slow watcher got %d events, want 30", len(got))
	}
	for i, inst := range got {
		if inst != ev(i).Service.Instance {
			t.Fatalf("event %d is %s, want %s", i, inst, ev(i).Service.Instance)
		}
	}
	if _, ok := l.watchers[stuck]; ok {
		t.Fatal("a watcher 28 events behind with room for 16 was not cut off")
	}
	n := 0
	for range stuck.ch {
		n++
	}
	if n != 2 {
		t.Fatalf("cut-off watcher's channel held %d events, want 2 before its end", n)
	}
	if _, ok := l.watchers[slow]; !ok || slow.backlog != nil {
		t.Fatalf("slow watcher: kept %v, backlog %d", ok, len(slow.backlog))
	}
}
