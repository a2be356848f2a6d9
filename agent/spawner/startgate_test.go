package spawner

import (
	"testing"
	"time"
)

func TestStartGate(t *testing.T) {
	var none *StartGate
	none.acquire()() // a nil gate never waits

	g := NewStartGate(2)
	r1, r2 := g.acquire(), g.acquire()
	third := make(chan func())
	go func() { third <- g.acquire() }()
	select {
	case <-third:
		t.Fatal("a third start ran while two held the gate")
	case <-time.After(50 * time.Millisecond):
	}
	r1()
	select {
	case r3 := <-third:
		r3()
	case <-time.After(waitLimit):
		t.Fatal("released slot not handed on")
	}
	r2()
	if got := NewStartGate(0); cap(got.slots) != 1 {
		t.Fatalf("NewStartGate(0) has %d slots, want 1", cap(got.slots))
	}
}
