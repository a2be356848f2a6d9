package needs

import (
	"testing"

	"github.com/allex-go/allex/lanwire"
)

// TestSameCapacity: reportCapacity skips a report equal to the last one,
// so every field, the free ports of each protocol included, must count.
func TestSameCapacity(t *testing.T) {
	base := func() lanwire.Capacity {
		return lanwire.Capacity{MaxProcesses: 10, Running: 3, FreePorts: map[string]int{"tcp": 5, "http": 7}}
	}
	for _, tc := range []struct {
		name   string
		change func(*lanwire.Capacity)
		same   bool
	}{
		{"identical", func(*lanwire.Capacity) {}, true},
		{"running", func(c *lanwire.Capacity) { c.Running++ }, false},
		{"max processes", func(c *lanwire.Capacity) { c.MaxProcesses = 0 }, false},
		{"free ports of a protocol", func(c *lanwire.Capacity) { c.FreePorts["tcp"]-- }, false},
		{"a protocol more", func(c *lanwire.Capacity) { c.FreePorts["ws"] = 0 }, false},
		{"no free-port map", func(c *lanwire.Capacity) { c.FreePorts = nil }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := base()
			tc.change(&b)
			if got := sameCapacity(base(), b); got != tc.same {
				t.Fatalf("sameCapacity = %v, want %v", got, tc.same)
			}
		})
	}
}
