package main

import (
	"bytes"

	"github.com/allex-go/allex/lanwire"
)

// needsPrefix starts every needs frame lanwire.Encode makes (an
// Envelope's fields in order).
var needsPrefix = []byte(`{"type":"needs","data":{"needs":[`)

// needsNames reads the instance names of a needs frame; ok is false for
// any other frame. The LAN manager sends every master a new list after
// most placements, so a thousand simulated masters sharing a CPU would
// spend it in the strict decoder; the names are all a master's claims
// depend on here. It relies on what the bench's needs hold: no
// properties (whose keys could be "instance"), and instance names,
// which lanwire keeps to [A-Za-z0-9_.-], need no escapes. Only
// Module is filled in besides.
func needsNames(b []byte) ([]lanwire.Need, bool) {
	if !bytes.HasPrefix(b, needsPrefix) {
		return nil, false
	}
	key := []byte(`"instance":"`)
	var out []lanwire.Need
	for rest := b[len(needsPrefix):]; ; {
		i := bytes.Index(rest, key)
		if i < 0 {
			return out, true
		}
		rest = rest[i+len(key):]
		j := bytes.IndexByte(rest, '"')
		if j < 0 {
			return nil, false
		}
		out = append(out, lanwire.Need{Instance: string(rest[:j]), Module: module})
		rest = rest[j+1:]
	}
}
