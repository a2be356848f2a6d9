package boottime

import (
	"testing"
	"time"
)

func TestNowAdvances(t *testing.T) {
	a := Now()
	if a <= 0 {
		t.Fatalf("Now() = %v, want > 0", a)
	}
	time.Sleep(time.Millisecond)
	if b := Now(); b <= a {
		t.Fatalf("Now() went from %v to %v", a, b)
	}
}
