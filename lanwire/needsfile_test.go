package lanwire_test

import (
	"strings"
	"testing"

	"github.com/allex-go/allex/lanwire"
)

func TestParseNeedsFile(t *testing.T) {
	tests := []struct {
		name, in, err string
		n             int
	}{
		{"ok", `{"needs":[{"instance":"a","module":"m"},{"instance":"b","module":"m","protocols":["tcp"]}]}`, "", 2},
		{"empty list", `{"needs":[]}`, "", 0},
		{"missing needs", `{}`, "missing", 0},
		{"unknown top field", `{"needs":[],"extra":1}`, `unknown field "extra"`, 0},
		{"unknown need field", `{"needs":[{"instance":"a","module":"m","color":"red"}]}`, `needs[0] (instance "a"): need: json: unknown field "color"`, 0},
		{"invalid need", `{"needs":[{"instance":"a","module":"m"},{"instance":"b","module":"bad module"}]}`, `needs[1] (instance "b")`, 0},
		{"duplicate", `{"needs":[{"instance":"a","module":"m"},{"instance":"a","module":"m"}]}`, "already defined at needs[0]", 0},
		{"trailing", `{"needs":[]} x`, "trailing", 0},
		{"repeated top key", `{"needs":[{"instance":"a","module":"m"}],"needs":[]}`, `duplicate field "needs"`, 0},
		{"not json", `needs`, "invalid", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			needs, err := lanwire.ParseNeedsFile("f.json", []byte(tt.in))
			if tt.err == "" {
				if err != nil || len(needs) != tt.n {
					t.Fatalf("got %v, %v", needs, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "f.json") {
				t.Fatalf("err = %v, want it to name f.json and contain %q", err, tt.err)
			}
		})
	}
}

func FuzzNeedsFile(f *testing.F) {
	f.Add([]byte(`{"needs":[{"instance":"a","module":"m","protocols":["tcp"],"fixedports":{"tcp":80},"machine":{"address":"10.0.0.0/8"}}]}`))
	f.Add([]byte(`{"needs":[]}`))
	f.Add([]byte(`{"needs":[{"instance":"a","module":"m"},{"instance":"a","module":"m"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		needs, err := lanwire.ParseNeedsFile("fuzz.json", b)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, n := range needs {
			if err := n.Validate(); err != nil {
				t.Fatalf("accepted invalid need: %v", err)
			}
			if seen[n.Instance] {
				t.Fatalf("accepted duplicate %q", n.Instance)
			}
			seen[n.Instance] = true
		}
	})
}

// TestNeedsFileSkipsBOM: a needs file saved with a UTF-8 byte order mark
// reads as the same file without one.
func TestNeedsFileSkipsBOM(t *testing.T) {
	needs, err := lanwire.ParseNeedsFile("f.json", []byte("\xEF\xBB\xBF"+`{"needs":[{"instance":"a","module":"m"}]}`))
	if err != nil || len(needs) != 1 || needs[0].Instance != "a" {
		t.Fatalf("ParseNeedsFile(BOM) = %+v, %v", needs, err)
	}
}
