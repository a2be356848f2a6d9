package lanstate

import (
	"testing"

	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// TestRevoke: a revoked machine's link is closed (its copies then end by
// its lease, as any lost master's), the revocation is in the batch, and
// its hello is refused from then on, also after a restart of the state.
func TestRevoke(t *testing.T) {
	x := newH(t)
	x.add("a")
	x.hello("s1", "m1", "id-1")
	x.publish("s1", "a")
	x.st.Revoke(store.Revocation{Machine: "m1", At: x.now, Reason: "stolen"})
	fx := x.step()
	if r := fx.Store.Revoked["m1"]; r == nil || r.Reason != "stolen" {
		t.Fatalf("revocation not in the batch: %+v", fx.Store.Revoked)
	}
	if len(fx.Closes) != 1 || fx.Closes[0].Session != "s1" || fx.Closes[0].Code != lanwire.CloseRefused {
		t.Fatalf("closes: %+v", fx.Closes)
	}
	if e := sent[*lanwire.Error](t, fx, "s1", lanwire.TypeError); e.Message != "this machine was revoked: stolen" {
		t.Errorf("error frame: %+v", e)
	}
	x.st.Ended(x.now, "s1", EndLease, x.now, x.now)
	x.step()
	if fx := x.hello("s2", "m1", "id-1"); len(fx.Closes) != 1 || fx.Closes[0].Session != "s2" {
		t.Fatalf("a revoked machine's hello: %+v", fx)
	}
	y := restore(t, x.cfg, x.store, nil, x.now)
	if fx := y.hello("s3", "m1", "id-1"); len(fx.Closes) != 1 || fx.Closes[0].Code != lanwire.CloseRefused {
		t.Fatalf("a revoked machine's hello after a restart: %+v", fx)
	}
	if fx := y.hello("s4", "m2", "id-2"); len(fx.Closes) != 0 {
		t.Fatalf("another machine refused: %+v", fx.Closes)
	}
}

// TestPutToken: token records ride in the batch; nil deletes.
func TestPutToken(t *testing.T) {
	x := newH(t)
	x.st.PutToken("abc123", &store.Token{ID: "abc123", Role: "read"})
	if fx := x.step(); fx.Store.Tokens["abc123"] == nil {
		t.Fatalf("token not in the batch: %+v", fx.Store)
	}
	x.st.PutToken("abc123", nil)
	if fx := x.step(); fx.Store.Tokens["abc123"] != nil || len(fx.Store.Tokens) != 1 {
		t.Fatalf("delete not in the batch: %+v", fx.Store.Tokens)
	}
	if snap, _ := x.store.Load(); len(snap.Tokens) != 0 {
		t.Fatalf("tokens left: %+v", snap.Tokens)
	}
}
