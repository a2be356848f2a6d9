package jsonkeys

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestUnique(t *testing.T) {
	tests := []struct {
		name, doc, want string // want "" for no error
	}{
		{"flat", `{"a":1,"b":2}`, ""},
		{"same key in sibling objects", `{"a":{"x":1},"b":{"x":2}}`, ""},
		{"same key in array elements", `[{"x":1},{"x":2}]`, ""},
		{"key equal to a string value", `{"a":"a","b":"a"}`, ""},
		{"scalar", `3`, ""},
		{"empty object", `{}`, ""},
		{"top level", `{"a": 1, "a": 2}`, `duplicate field "a" (line 1, column 10)`},
		{"nested", "{\"m\": {\"web\": {\"c\": 1,\n \"c\": 2}}}", `m.web: duplicate field "c" (line 2, column 2)`},
		{"in an array", `{"needs":[{"i":1},{"i":1,"i":2}]}`, `needs[1]: duplicate field "i" (line 1, column 26)`},
		{"array of arrays", `[[{}],[{"k":1,"k":1}]]`, `[1][0]: duplicate field "k" (line 1, column 15)`},
		{"after a nested duplicate-free object", `{"a":{"b":1},"a":2}`, `duplicate field "a" (line 1, column 14)`},
		{"escaped spelling of the same key", `{"a":1,"\u0061":2}`, `duplicate field "a" (line 1, column 8)`},
		{"nested key equal to an outer one", `{"x":{"x":{"x":1}},"y":2}`, ""},
		{"outer key repeated after a nested object", `{"x":{"y":1,"z":2},"y":3,"x":4}`, `duplicate field "x" (line 1, column 26)`},
		{"key with an escaped quote", `{"a\"b":1,"a":2}`, ""},
		{"strings with braces", `{"a":"}{,\"","b":"[\\"}`, ""},
		{"unicode column", "{\"é\":1, \"é\":2}", `duplicate field "é" (line 1, column 9)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Unique([]byte(tc.doc))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Unique(%s) = %v", tc.doc, err)
				}
				return
			}
			var ke *Error
			if !errors.As(err, &ke) || err.Error() != tc.want {
				t.Fatalf("Unique(%s) = %v, want %q", tc.doc, err, tc.want)
			}
		})
	}
}

// TestUniqueLargeObject: objects past the short list's length are checked
// through the map, including keys seen before the switch.
func TestUniqueLargeObject(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := range 40 {
		fmt.Fprintf(&b, `"k%d":{"k%d":%d},`, i, i, i)
	}
	ok := b.String() + `"end":0}`
	if err := Unique([]byte(ok)); err != nil {
		t.Fatalf("40 distinct keys: %v", err)
	}
	for _, k := range []string{"k0", "k15", "k16", "k39", "end"} {
		doc := b.String() + `"end":0,"` + k + `":1}`
		if k == "end" {
			doc = b.String() + `"end":0,"end":1}`
		}
		var ke *Error
		if err := Unique([]byte(doc)); !errors.As(err, &ke) || ke.Key != k || ke.Path != "" {
			t.Errorf("repeated %s: %v", k, err)
		}
	}
}

// TestUniqueMalformed: every prefix of a document, and stray bytes, give
// an error or nil, never a panic or a loop, and never an *Error.
func TestUniqueMalformed(t *testing.T) {
	doc := `{"a":[1,{"b":"x\"y"},true,null],"c":{"d":-1.5e3}}`
	for n := range len(doc) {
		var ke *Error
		if err := Unique([]byte(doc[:n])); err == nil || errors.As(err, &ke) {
			t.Errorf("prefix %q: %v, want a syntax error", doc[:n], err)
		}
	}
	for _, bad := range []string{"", "   ", "{,}", `{"a" 1}`, `{"a":1,}`, `[1,]`, `{1:2}`, `{"a":}`, `[`, strings.Repeat("[", maxDepth+2)} {
		var ke *Error
		if err := Unique([]byte(bad)); err == nil || errors.As(err, &ke) {
			t.Errorf("%.20q: %v, want a syntax error", bad, err)
		}
	}
}

func TestLineCol(t *testing.T) {
	data := []byte("ab\ncé\nx")
	for off, want := range map[int]string{-1: "line 1, column 1", 0: "line 1, column 1", 3: "line 2, column 1",
		6: "line 2, column 3", 100: "line 3, column 2"} {
		if got := LineCol(data, off); got != want {
			t.Errorf("LineCol(%d) = %q, want %q", off, got, want)
		}
	}
	if !strings.Contains(LineCol(nil, 5), "line 1") {
		t.Error("LineCol(nil) should be line 1")
	}
}
