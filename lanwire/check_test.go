package lanwire

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		typ     string
		payload any
		wantErr string
	}{
		{"pointer", TypeDown, &Down{Instance: "w1", Epoch: 3, Restarting: true}, ""},
		{"no epoch", TypeDown, &Down{Instance: "w1"}, "epoch 0"},
		{"value", TypeCapacity, Capacity{Running: 2}, ""},
		{"invalid value", TypeCapacity, Capacity{Running: -1}, "negative"},
		{"invalid pointer", TypeClaim, &Claim{Instance: "../x"}, "instance"},
		{"other type", TypeClaim, &Down{Instance: "w1"}, "payload is *lanwire.Down"},
		{"nil", TypeClaim, nil, "payload is <nil>"},
		{"unknown type", "bogus", &Claim{Instance: "w1"}, "unknown type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.typ, tt.payload)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				// What Check accepts, Encode and Decode agree on.
				b, err := Encode(tt.typ, tt.payload)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := Decode(b); err != nil {
					t.Fatalf("Decode of a checked frame: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrBadFrame) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check = %v, want ErrBadFrame with %q", err, tt.wantErr)
			}
		})
	}
}

// TestCapacityFull: a master with no limit is never full; one with a
// limit is full once it runs that many need children.
func TestCapacityFull(t *testing.T) {
	for _, tc := range []struct {
		c    Capacity
		want bool
	}{
		{Capacity{MaxProcesses: 0, Running: 1000}, false},
		{Capacity{MaxProcesses: 3, Running: 2}, false},
		{Capacity{MaxProcesses: 3, Running: 3}, true},
		{Capacity{MaxProcesses: 3, Running: 4}, true},
	} {
		if got := tc.c.Full(); got != tc.want {
			t.Errorf("%+v.Full() = %v, want %v", tc.c, got, tc.want)
		}
	}
}
