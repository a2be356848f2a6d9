package lanmanager

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// TestSortedNeedsKeptInOrder: after any mix of needs added, replaced and
// removed, with the sorted view built at random moments in between, the
// view lists exactly the current needs, in instance order, as the same
// pointers the needs map holds.
func TestSortedNeedsKeptInOrder(t *testing.T) {
	s := &Server{needs: map[string]*needState{}}
	rng := rand.New(rand.NewPCG(3, 4))
	for step := range 5000 {
		inst := "svc-" + strconv.Itoa(rng.IntN(200))
		switch rng.IntN(3) {
		case 0, 1:
			s.setNeedLocked(&needState{st: store.Need{Need: lanwire.Need{Instance: inst, Module: "m"}}})
		case 2:
			s.dropNeedLocked(inst)
		}
		if rng.IntN(10) != 0 {
			continue
		}
		got := s.sortedNeedsLocked()
		want := slices.Sorted(func(yield func(string) bool) {
			for k := range s.needs {
				if !yield(k) {
					return
				}
			}
		})
		if len(got) != len(want) {
			t.Fatalf("step %d: %d sorted needs, want %d", step, len(got), len(want))
		}
		for i, ns := range got {
			if ns.st.Need.Instance != want[i] || s.needs[want[i]] != ns {
				t.Fatalf("step %d: sorted[%d] = %q (%p), want %q (%p)", step, i, ns.st.Need.Instance, ns, want[i], s.needs[want[i]])
			}
		}
	}
}
