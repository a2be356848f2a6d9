package agent

import (
	"sync"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// subscriberBuffer bounds how far a watcher may lag before it is cut off;
// a slow allexctl must never stall the supervisors that publish events.
const subscriberBuffer = 1024

// bus fans lifecycle events out to watchers.
type bus struct {
	mu   sync.Mutex
	seq  uint64
	subs map[*subscription]struct{}
}

type subscription struct {
	instance string
	ch       chan *allexv1.Event
	closed   bool
}

func newBus() *bus { return &bus{subs: map[*subscription]struct{}{}} }

// publish stamps ev with the next sequence number and hands it to every
// matching watcher; a watcher whose buffer is full is dropped (its channel
// closed) rather than waited for.
func (b *bus) publish(ev *allexv1.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	ev.Seq = b.seq
	for s := range b.subs {
		if s.instance != "" && s.instance != ev.GetInstance() {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.closed = true
			close(s.ch)
			delete(b.subs, s)
		}
	}
}

// subscribe returns a channel of events (for one instance, or all when
// instance is empty) and a cancel function. The channel is closed on cancel
// or when the watcher falls too far behind.
func (b *bus) subscribe(instance string) (<-chan *allexv1.Event, func()) {
	s := &subscription{instance: instance, ch: make(chan *allexv1.Event, subscriberBuffer)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s.ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if !s.closed {
			s.closed = true
			close(s.ch)
			delete(b.subs, s)
		}
	}
}
