package lanwire

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		typ     string
		wantErr bool
	}{
		{"claim", `{"type":"claim","data":{"instance":"web1"}}`, TypeClaim, false},
		{"hello", `{"type":"hello","data":{"machine":"m1","identity":"0123456789abcdef","address":"127.0.0.1","modules":["web"],"capacity":{"maxprocesses":0,"running":0}}}`, TypeHello, false},
		{"hello without identity", `{"type":"hello","data":{"machine":"m1","address":"127.0.0.1","modules":["web"],"capacity":{"maxprocesses":0,"running":0}}}`, TypeHello, true},
		{"hello running without epoch", `{"type":"hello","data":{"machine":"m1","identity":"0123456789abcdef","address":"127.0.0.1","capacity":{"maxprocesses":0,"running":0},"running":[{"instance":"a","module":"b","pid":3}]}}`, TypeHello, true},
		{"hello running starting", `{"type":"hello","data":{"machine":"m1","identity":"0123456789abcdef","address":"127.0.0.1","capacity":{"maxprocesses":0,"running":0},"running":[{"instance":"a","module":"b","epoch":2,"pid":0}]}}`, TypeHello, false},
		{"spawned", `{"type":"spawned","data":{"instance":"w","epoch":1,"pid":3}}`, TypeSpawned, false},
		{"spawned no epoch", `{"type":"spawned","data":{"instance":"w","pid":3}}`, TypeSpawned, true},
		{"stop no epoch", `{"type":"stop","data":{"instance":"w","reason":"x"}}`, TypeStop, true},
		{"welcome", `{"type":"welcome","data":{"session":"s","heartbeatms":1000,"leasems":10000,"fencegracems":3000,"exitfencems":2000}}`, TypeWelcome, false},
		{"welcome grace beyond lease", `{"type":"welcome","data":{"session":"s","heartbeatms":1000,"leasems":10000,"fencegracems":10000,"exitfencems":2000}}`, TypeWelcome, true},
		{"not json", `{"type":`, "", true},
		{"unknown type", `{"type":"nope","data":{}}`, "", true},
		{"unknown field", `{"type":"claim","data":{"instance":"w","extra":1}}`, TypeClaim, true},
		{"unknown envelope field", `{"type":"claim","x":1,"data":{"instance":"w"}}`, "", true},
		{"missing data", `{"type":"claim"}`, TypeClaim, true},
		{"trailing", `{"type":"claim","data":{"instance":"w"}} {}`, "", true},
		{"bad instance", `{"type":"claim","data":{"instance":"../etc"}}`, TypeClaim, true},
		{"bad hello address", `{"type":"hello","data":{"machine":"m1","address":"nope","modules":[],"capacity":{"maxprocesses":0,"running":0}}}`, TypeHello, true},
		{"spawned zero pid", `{"type":"spawned","data":{"instance":"w","epoch":1,"pid":0}}`, TypeSpawned, true},
		{"spawned bad proto", `{"type":"spawned","data":{"instance":"w","epoch":1,"pid":3,"ports":{"udp":1}}}`, TypeSpawned, true},
		{"grant bad need", `{"type":"grant","data":{"epoch":1,"need":{"instance":"w","module":"m","protocols":["tcp","tcp"]}}}`, TypeGrant, true},
		{"repeated payload field", `{"type":"claim","data":{"instance":"w","instance":"v"}}`, TypeClaim, true},
		{"repeated nested field", `{"type":"spawned","data":{"instance":"w","epoch":1,"pid":3,"ports":{"tcp":1,"tcp":2}}}`, TypeSpawned, true},
		{"repeated type", `{"type":"claim","type":"down","data":{"instance":"w"}}`, "", true},
		{"repeated data", `{"type":"claim","data":{"instance":"w"},"data":{"instance":"v"}}`, "", true},
		{"grant no epoch", `{"type":"grant","data":{"need":{"instance":"w","module":"m"}}}`, TypeGrant, true},
		{"hello placement", `{"type":"hello","data":{"machine":"m1","identity":"0123456789abcdef","address":"127.0.0.1","capacity":{"maxprocesses":0,"running":0},"protocol":2}}`, TypeHello, false},
		{"hello newer protocol", `{"type":"hello","data":{"machine":"m1","identity":"0123456789abcdef","address":"127.0.0.1","capacity":{"maxprocesses":0,"running":0},"protocol":3}}`, TypeHello, true},
		{"decline", `{"type":"decline","data":{"instance":"w","epoch":4,"reason":"full","final":true}}`, TypeDecline, false},
		{"decline no epoch", `{"type":"decline","data":{"instance":"w","reason":"full"}}`, TypeDecline, true},
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

// TestRepeatedKeysNamed: the error says which key is repeated and where,
// for frames and for needs (the admin API's bodies).
func TestRepeatedKeysNamed(t *testing.T) {
	_, _, err := Decode([]byte(`{"type":"claim","data":{"instance":"w","instance":"v"}}`))
	if want := `bad frame: data: duplicate field "instance" (line 1, column 40)`; err == nil || err.Error() != want {
		t.Errorf("Decode: %v, want %q", err, want)
	}
	_, err = DecodeNeed([]byte(`{"instance":"w","module":"m","machine":{"id":"a","id":"b"}}`))
	if want := `need: machine: duplicate field "id" (line 1, column 50)`; err == nil || err.Error() != want {
		t.Errorf("DecodeNeed: %v, want %q", err, want)
	}
}

func TestRoundTrip(t *testing.T) {
	in := &Grant{Epoch: 7, Need: Need{Instance: "web1", Module: "web", Protocols: []string{"tcp", "http"}, FixedPorts: Ports{"tcp": 9000}}}
	b, err := Encode(TypeGrant, in)
	if err != nil {
		t.Fatal(err)
	}
	typ, p, err := Decode(b)
	if err != nil || typ != TypeGrant {
		t.Fatalf("Decode: %v %q", err, typ)
	}
	g := p.(*Grant)
	if g.Need.FixedPorts["tcp"] != 9000 || g.Need.Instance != "web1" || g.Epoch != 7 {
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
	f.Add([]byte(`{"type":"hello","data":{"machine":"m1","identity":"0123456789abcdef","address":"127.0.0.1","modules":["web"],"capacity":{"maxprocesses":1,"running":0},"running":[{"instance":"a","module":"b","epoch":4,"pid":3,"ports":{"tcp":1}}]}}`))
	f.Add([]byte(`{"type":"grant","data":{"epoch":9,"need":{"instance":"w","module":"m","protocols":["tcp"],"machine":{"address":"10.0.0.0/8"}}}}`))
	f.Add([]byte(`{"type":"welcome","data":{"session":"s","heartbeatms":1000,"leasems":10000,"fencegracems":3000,"exitfencems":2000}}`))
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

func TestPingPayload(t *testing.T) {
	for _, d := range []time.Duration{0, time.Nanosecond, 1234567 * time.Hour} {
		got, ok := ParsePingPayload(PingPayload(d))
		if !ok || got != d {
			t.Errorf("ParsePingPayload(PingPayload(%v)) = %v, %v", d, got, ok)
		}
	}
	for _, b := range [][]byte{nil, {1, 2, 3}, make([]byte, 9), {0xff, 0, 0, 0, 0, 0, 0, 0}} {
		if _, ok := ParsePingPayload(b); ok {
			t.Errorf("ParsePingPayload(%x) accepted", b)
		}
	}
}

func TestTimingsValidate(t *testing.T) {
	if err := DefaultTimings().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		t    Timings
		want string
	}{
		{NewTimings(time.Millisecond, time.Second, 0, time.Second), "heartbeat"},
		{NewTimings(time.Second, time.Second, 0, time.Second), "two heartbeats"},
		{NewTimings(time.Second, 10*time.Second, 10*time.Second, time.Second), "fence grace"},
		{NewTimings(time.Second, 10*time.Second, time.Second, 0), "exit fence"},
		{NewTimings(time.Second, 10*time.Second, time.Second, 11*time.Second), "exit fence no longer"},
	} {
		err := tc.t.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: Validate = %v, want %q", tc.t, err, tc.want)
		}
	}
}
