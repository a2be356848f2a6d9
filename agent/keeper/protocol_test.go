package keeper

import (
	"reflect"
	"strings"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []message{
		{kind: kindStart, id: 7, fenced: true, stdio: [3]bool{false, true, true}, path: "/bin/sh", dir: "/tmp",
			argv: []string{"sh", "-c", "echo ünï"}, env: []string{"A=1", "B="}},
		{kind: kindStart, id: 8, path: "/bin/true"},
		{kind: kindLease, id: 9, n: 123456789},
		{kind: kindLease, id: 10, n: -5},
		{kind: kindFence, id: 11, n: 2e9},
		{kind: kindBye, id: 12},
		{kind: kindReady, n: Version},
		{kind: kindStarted, id: 13, pid: 4242},
		{kind: kindFailed, id: 14, text: "fork/exec /x: no such file or directory"},
		{kind: kindExited, pid: 4242, code: -1, text: "SIGKILL"},
		{kind: kindExited, pid: 1, code: 3},
		{kind: kindExited, pid: 5, strays: true},
	} {
		got, err := parse(m.appendTo(nil))
		if err != nil {
			t.Errorf("%q: %v", m.kind, err)
			continue
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%q: got %+v, want %+v", m.kind, got, m)
		}
	}
}

func TestParseRefusesMalformed(t *testing.T) {
	start := (&message{kind: kindStart, id: 1, path: "/bin/true", argv: []string{"true"}}).appendTo(nil)
	exited := (&message{kind: kindExited, pid: 3, code: 0, strays: true}).appendTo(nil)
	for name, b := range map[string][]byte{
		"empty":            nil,
		"short header":     {kindLease, 1, 0},
		"unknown kind":     {'?', 1, 0, 0, 0},
		"lease no body":    {kindLease, 1, 0, 0, 0},
		"trailing bytes":   append((&message{kind: kindBye, id: 1}).appendTo(nil), 0),
		"start cut":        start[:len(start)-2],
		"start flags":      append([]byte{kindStart, 1, 0, 0, 0, 0x80}, start[6:]...),
		"huge count":       {kindStart, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"no path":          (&message{kind: kindStart, id: 1}).appendTo(nil),
		"nul in env":       (&message{kind: kindStart, id: 1, path: "/x", env: []string{"A=\x00"}}).appendTo(nil),
		"pid zero":         (&message{kind: kindStarted, id: 1}).appendTo(nil),
		"exited no strays": exited[:len(exited)-1],
		"exited strays 2":  append(exited[:len(exited)-1:len(exited)-1], 2),
		"too long":         make([]byte, MaxMessage+1),
	} {
		if m, err := parse(b); err == nil {
			t.Errorf("%s: parsed as %+v", name, m)
		} else if !strings.HasPrefix(err.Error(), "keeper protocol: ") {
			t.Errorf("%s: error %q", name, err)
		}
	}
}

// FuzzParse checks that no packet crashes the keeper's decoder.
func FuzzParse(f *testing.F) {
	f.Add((&message{kind: kindStart, id: 1, path: "/bin/true", argv: []string{"true"}, env: []string{"A=B"}}).appendTo(nil))
	f.Add((&message{kind: kindExited, pid: 3, code: -1, text: "SIGKILL"}).appendTo(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parse(b)
		if err != nil {
			return
		}
		if _, err := parse(m.appendTo(nil)); err != nil {
			t.Fatalf("re-encoding %+v: %v", m, err)
		}
	})
}
