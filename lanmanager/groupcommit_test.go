package lanmanager_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// countingStore counts commits and remembers which needs are stored.
type countingStore struct {
	*store.Memory
	commits atomic.Int64
	mu      sync.Mutex
	stored  map[string]bool
}

func (c *countingStore) Commit(b store.Batch) error {
	if err := c.Memory.Commit(b); err != nil {
		return err
	}
	c.commits.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, rec := range b.Instances {
		c.stored[name] = rec != nil
	}
	return nil
}

// TestGroupCommit: concurrent admin calls share commits, and each is
// answered only once its need is stored.
func TestGroupCommit(t *testing.T) {
	cs := &countingStore{Memory: store.NewMemory(), stored: map[string]bool{}}
	cfg := testConfig()
	cfg.Store = cs
	e := start(t, cfg)
	const calls = 200
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for k := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("n%03d", k)
			if err := e.srv.AddNeed(lanwire.Need{Instance: name, Module: "web", Protocols: []string{"tcp"}}); err != nil {
				errs <- err
				return
			}
			cs.mu.Lock()
			ok := cs.stored[name]
			cs.mu.Unlock()
			if !ok {
				errs <- fmt.Errorf("%s answered before it was stored", name)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := cs.commits.Load(); n >= calls/2 {
		t.Fatalf("%d commits for %d concurrent calls, want them grouped", n, calls)
	}
	t.Logf("%d calls, %d commits", calls, cs.commits.Load())
}
