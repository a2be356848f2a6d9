package lanstate

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/allex-go/allex/lanwire"
)

// TestSortedKeptInOrder: after any mix of needs added, granted, removed
// and ended, the sorted view lists exactly the current instances, in
// order, as the same pointers the map holds; and the store holds exactly
// them too.
func TestSortedKeptInOrder(t *testing.T) {
	x := newH(t)
	x.hello("s1", "m1", idA)
	rng := rand.New(rand.NewPCG(3, 4))
	for step := range 3000 {
		name := "svc-" + strconv.Itoa(rng.IntN(100))
		i := x.st.insts[name]
		switch {
		case i == nil || i.rec.Removed:
			_ = x.st.AddNeeds(x.now, []lanwire.Need{{Instance: name, Module: "web"}}, "api")
		case i.rec.Copy == nil && rng.IntN(2) == 0:
			x.st.Frame(x.now, "s1", lanwire.TypeClaim, &lanwire.Claim{Instance: name})
		case i.rec.Copy != nil && rng.IntN(2) == 0:
			x.st.Frame(x.now, "s1", lanwire.TypeSpawnFailed, &lanwire.SpawnFailed{Instance: name, Epoch: i.rec.Copy.Epoch})
		default:
			_ = x.st.RemoveNeed(name)
		}
		x.step()
		want := slices.Sorted(func(yield func(string) bool) {
			for k := range x.st.insts {
				if !yield(k) {
					return
				}
			}
		})
		if len(x.st.sorted) != len(want) {
			t.Fatalf("step %d: %d sorted, want %d", step, len(x.st.sorted), len(want))
		}
		for k, i := range x.st.sorted {
			if i.name() != want[k] || x.st.insts[want[k]] != i {
				t.Fatalf("step %d: sorted[%d] = %q, want %q", step, k, i.name(), want[k])
			}
		}
		snap, _ := x.store.Load()
		if len(snap.Instances) != len(want) {
			t.Fatalf("step %d: %d stored, want %d", step, len(snap.Instances), len(want))
		}
	}
}
