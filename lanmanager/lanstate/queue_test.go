package lanstate

import (
	"fmt"
	"slices"
	"testing"

	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// windowed is a harness whose placement window is n.
func windowed(t *testing.T, n int) *h {
	cfg := testConfig()
	cfg.MaxPlacing = n
	return restore(t, cfg, store.NewMemory(), nil, t0)
}

// spawnGranted reports every grant in fx spawned and passes its check,
// as one batch, and returns that batch's effects.
func (x *h) spawnGranted(fx Effects) Effects {
	x.t.Helper()
	for _, sd := range fx.Sends {
		if g, ok := sd.Payload.(*lanwire.Grant); ok {
			x.st.Frame(x.now, sd.Session, lanwire.TypeSpawned, &lanwire.Spawned{Instance: g.Need.Instance, Epoch: g.Epoch, PID: 100, Ports: lanwire.Ports{"tcp": 5000}})
		}
	}
	for _, c := range x.step().Checks {
		x.st.CheckDone(x.now, c.Instance, c.ID, nil)
	}
	return x.step()
}

func names(prefix string, n int) []string {
	var out []string
	for k := range n {
		out = append(out, fmt.Sprintf("%s%03d", prefix, k))
	}
	return out
}

func granted(fx Effects) []string {
	var out []string
	for _, g := range grants(fx) {
		out = append(out, g...)
	}
	slices.Sort(out)
	return out
}

// TestPlacementWindow: no more than MaxPlacing copies are granted and not
// yet published; each publish lets one more need be granted, in order.
func TestPlacementWindow(t *testing.T) {
	x := windowed(t, 3)
	x.placer("s1", "m1", 0)
	fx := x.addStep(names("n", 10)...)
	if got := granted(fx); !slices.Equal(got, names("n", 3)) {
		t.Fatalf("granted %v, want the first 3", got)
	}
	if got := granted(x.at(0)); len(got) != 0 {
		t.Fatalf("granted %v with the window full", got)
	}
	fx = x.spawnGranted(fx)
	if got := granted(fx); !slices.Equal(got, []string{"n003", "n004", "n005"}) {
		t.Fatalf("after 3 publishes granted %v, want n003-n005", got)
	}
	x.wantServices("n000@m1", "n001@m1", "n002@m1")
}

// TestPlacementWindowIgnoresAwayMasters: copies granted to a master that
// went away do not hold the window until their fence.
func TestPlacementWindowIgnoresAwayMasters(t *testing.T) {
	x := windowed(t, 2)
	x.placer("s1", "m1", 0)
	x.addStep("a", "b", "c", "d")
	x.placer("s2", "m2", 0)
	x.st.Ended(x.now, "s1", EndLease, x.now, x.now)
	if got := granted(x.step()); !slices.Equal(got, []string{"c", "d"}) {
		t.Fatalf("granted %v, want c and d on m2", got)
	}
}

// TestPlacementFairBetweenRequests: a single need added behind a big
// request is placed in the next pass with room, not after that request.
func TestPlacementFairBetweenRequests(t *testing.T) {
	x := windowed(t, 4)
	x.placer("s1", "m1", 0)
	fx := x.addStep(names("big", 100)...)
	if got := granted(fx); len(got) != 4 {
		t.Fatalf("granted %v, want 4", got)
	}
	if got := granted(x.addStep("single")); len(got) != 0 {
		t.Fatalf("granted %v with the window full", got)
	}
	fx = x.spawnGranted(fx)
	got := granted(fx)
	if len(got) != 4 || !slices.Contains(got, "single") {
		t.Fatalf("granted %v, want single among 4", got)
	}
	// Taken in turn: the big request's next needs, in order.
	if want := []string{"big004", "big005", "big006", "single"}; !slices.Equal(got, want) {
		t.Fatalf("granted %v, want %v", got, want)
	}
	// The groups empty out and are forgotten.
	for range 40 {
		fx = x.spawnGranted(fx)
	}
	x.wantState("big099", "satisfied", "m1")
	if len(x.st.groups) != 0 || x.st.background != nil {
		t.Fatalf("%d groups left", len(x.st.groups))
	}
}

// TestPlacementTurnsRotate: with room for one need per pass, three
// requests take turns.
func TestPlacementTurnsRotate(t *testing.T) {
	x := windowed(t, 1)
	x.placer("s1", "m1", 0)
	fx := x.addStep("a1", "a2", "a3")
	x.addStep("b1", "b2")
	x.addStep("c1")
	var order []string
	for range 6 {
		order = append(order, granted(fx)...)
		fx = x.spawnGranted(fx)
	}
	if want := []string{"a1", "a2", "b1", "c1", "a3", "b2"}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
}
