package spawner

import (
	"testing"

	"github.com/hashicorp/go-hclog"
)

func noLogPoller(t *testing.T) {
	pollPipes = false
	t.Cleanup(func() { pollPipes = true })
}

// The poller copies a run's pipe only once the previous run's pipe has
// ended, and a pipe whose writer never closes it ends at finish with what
// it held.
func TestLogPollerKeepsRunsInOrder(t *testing.T) {
	w := &gatedWriter{release: make(chan struct{})}
	close(w.release)
	r1, w1, err := newPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w1.Close()
	first := startPump(r1, w, nil, "first run\n", pumpLimit, hclog.NewNullLogger())
	second := startPump(filledPipe(t, "b\n"), w, first, "second run\n", pumpLimit, hclog.NewNullLogger())
	if _, err := w1.WriteString("a\n"); err != nil {
		t.Fatal(err)
	}
	// w1 stays open, as an escaped writer would keep it.
	first.finish()
	<-first.done
	<-second.done
	if got, want := w.String(), "first run\na\nsecond run\nb\n"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
	second.mu.Lock()
	defer second.mu.Unlock()
	if second.polled == nil {
		t.Errorf("the log poller did not copy the second run's pipe")
	}
}
