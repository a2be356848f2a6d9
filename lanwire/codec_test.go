package lanwire

import (
	"errors"
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		typ     string
		wantErr bool
	}{
		{"claim", `{"type":"claim","data":{"instance":"web1"}}`, TypeClaim, false},
		{"hello", `{"type":"hello","data":{"machine":"m1","address":"127.0.0.1","modules":["web"],"capacity":{"maxprocesses":0,"running":0}}}`, TypeHello, false},
		{"not json", `{"type":`, "", true},
		{"unknown type", `{"type":"nope","data":{}}`, "", true},
		{"unknown field", `{"type":"claim","data":{"instance":"w","extra":1}}`, TypeClaim, true},
		{"unknown envelope field", `{"type":"claim","x":1,"data":{"instance":"w"}}`, "", true},
		{"missing data", `{"type":"claim"}`, TypeClaim, true},
		{"trailing", `{"type":"claim","data":{"instance":"w"}} {}`, "", true},
		{"bad instance", `{"type":"claim","data":{"instance":"../etc"}}`, TypeClaim, true},
		{"bad hello address", `{"type":"hello","data":{"machine":"m1","address":"nope","modules":[],"capacity":{"maxprocesses":0,"running":0}}}`, TypeHello, true},
		{"spawned zero pid", `{"type":"spawned","data":{"instance":"w","pid":0}}`, TypeSpawned, true},
		{"spawned bad proto", `{"type":"spawned","data":{"instance":"w","pid":3,"ports":{"udp":1}}}`, TypeSpawned, true},
		{"grant bad need", `{"type":"grant","data":{"need":{"instance":"w","module":"m","protocols":["tcp","tcp"]}}}`, TypeGrant, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, p, err := Decode([]byte(tt.in))
			if typ != tt.typ {
				t.Errorf("type = %q, want %q", typ, tt.typ)
			}
			if tt.wantErr {
				if !errors.Is(err, ErrBadFrame) {
					t.Fatalf("err = %v, want ErrBadFrame", err)
				}
				return
			}
			if err != nil || p == nil {
				t.Fatalf("Decode: %v", err)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	in := &Grant{Need: Need{Instance: "web1", Module: "web", Protocols: []string{"tcp", "http"}, FixedPorts: Ports{"tcp": 9000}}}
	b, err := Encode(TypeGrant, in)
	if err != nil {
		t.Fatal(err)
	}
	typ, p, err := Decode(b)
	if err != nil || typ != TypeGrant {
		t.Fatalf("Decode: %v %q", err, typ)
	}
	g := p.(*Grant)
	if g.Need.FixedPorts["tcp"] != 9000 || g.Need.Instance != "web1" {
		t.Fatalf("got %+v", g)
	}
}

func TestNeedAllows(t *testing.T) {
	tests := []struct {
		c        *MachineConstraint
		id, addr string
		want     bool
	}{
		{nil, "m", "10.0.0.1", true},
		{&MachineConstraint{ID: "m"}, "m", "10.0.0.1", true},
		{&MachineConstraint{ID: "m"}, "n", "10.0.0.1", false},
		{&MachineConstraint{Address: "127.0.0.0/8"}, "n", "127.0.0.2", true},
		{&MachineConstraint{Address: "127.0.0.0/8"}, "n", "10.0.0.1", false},
		{&MachineConstraint{Address: "::1"}, "n", "::1", true},
	}
	for _, tt := range tests {
		n := Need{Instance: "i", Module: "m", Machine: tt.c}
		if got := n.Allows(tt.id, tt.addr); got != tt.want {
			t.Errorf("%+v Allows(%s,%s) = %v", tt.c, tt.id, tt.addr, got)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"type":"claim","data":{"instance":"web1"}}`))
	f.Add([]byte(`{"type":"hello","data":{"machine":"m1","address":"127.0.0.1","modules":["web"],"capacity":{"maxprocesses":1,"running":0},"running":[{"instance":"a","module":"b","pid":3,"ports":{"tcp":1}}]}}`))
	f.Add([]byte(`{"type":"grant","data":{"need":{"instance":"w","module":"m","protocols":["tcp"],"machine":{"address":"10.0.0.0/8"}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, p, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error not wrapping ErrBadFrame: %v", err)
			}
			return
		}
		// Whatever decodes must encode and decode to the same type again.
		out, err := Encode(typ, p)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if typ2, _, err := Decode(out); err != nil || typ2 != typ {
			t.Fatalf("re-decode %q: %v", out, err)
		}
	})
}
