package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/etcdtest"
)

// TestUnreachedCounts: masters count once each, for failedFor after their
// last failed relay.
func TestUnreachedCounts(t *testing.T) {
	u := newUnreached()
	t0 := time.Unix(100, 0)
	u.failed("10.0.0.1:4000", "http://lead", t0)
	u.failed("10.0.0.1:4001", "http://lead", t0.Add(time.Second)) // same master, new port
	u.failed("10.0.0.2:4000", "http://lead", t0.Add(time.Second))
	if n, l := u.count(t0.Add(1500 * time.Millisecond)); n != 2 || l != "http://lead" {
		t.Fatalf("count = %d %q, want 2", n, l)
	}
	if n, _ := u.count(t0.Add(time.Second + failedFor)); n != 0 {
		t.Fatalf("count after failedFor = %d, want 0", n)
	}
}

// TestStepDownOnlyWhenOutnumbered: a leader steps down on reports naming
// it, written since its election, of more masters than it has linked,
// twice in a row; not on older reports, reports naming another leader,
// or fewer masters than linked.
func TestStepDownOnlyWhenOutnumbered(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put := func(self string, r report) int64 {
		v, _ := json.Marshal(r)
		resp, err := cli.Put(ctx, unreachedKey("/lan", self), string(v))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	old := put("http://s1", report{Leader: "http://me", Masters: 5}) // before the election
	put("http://s2", report{Leader: "http://other", Masters: 5})
	run := func(linked int) bool {
		wctx, stop := context.WithTimeout(ctx, 4*checkEvery)
		defer stop()
		stepped := false
		watchUnreached(wctx, cli, "/lan", "http://me", old, func() int { return linked }, func(int, int) { stepped = true })
		return stepped
	}
	if run(0) {
		t.Fatal("stepped down on a report older than the election, or naming another leader")
	}
	put("http://s3", report{Leader: "http://me", Masters: 2})
	if run(2) {
		t.Fatal("stepped down with as many masters linked as cut off")
	}
	if !run(1) {
		t.Fatal("did not step down with 2 masters cut off and 1 linked")
	}
}
