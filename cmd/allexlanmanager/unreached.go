package main

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allex-go/allex/internal/strikes"
)

// A leader cut off from masters and standbys, but not from etcd, keeps
// its lease; its masters find no relay to it and would fence at the end
// of their lease. So a standby that masters ask to relay, and that
// cannot reach the leader either, reports how many masters it hears
// under <prefix>/unreached/<its address>, naming the leader, under a
// short lease; a leader that finds more masters reported than linked to
// it, twice in a row, steps down, and a LAN manager they reach leads.
//
// Timeline (heartbeat 1s, lease 10s): at the cut the masters' links go
// silent and are dropped after 3 s; their relays through the standby fail
// at once; the standby reports within reportEvery; the leader, which
// dropped the silent links by then too, sees 2 > 0 on two checks
// (checkEvery apart) and resigns about 4.5 s after the cut; the standby
// leads at once and the masters, retrying every 250 ms, link to it well
// before their fence begins (lease minus fence grace, 7 s).

const (
	reportEvery = 500 * time.Millisecond
	reportTTL   = 2 // seconds a report outlives its last renewal
	failedFor   = 2 * time.Second
	checkEvery  = 500 * time.Millisecond
)

// unreached records the masters whose relay to the leader failed.
type unreached struct {
	mu     sync.Mutex
	fails  map[string]time.Time // master address → last failed relay
	leader string
}

func newUnreached() *unreached { return &unreached{fails: map[string]time.Time{}} }

func (u *unreached) failed(remote, leader string, now time.Time) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.fails[host], u.leader = now, leader
}

// count returns how many masters failed within failedFor, and the leader.
func (u *unreached) count(now time.Time) (int, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for h, t := range u.fails {
		if now.Sub(t) < failedFor {
			n++
		} else {
			delete(u.fails, h)
		}
	}
	return n, u.leader
}

// report is the value of an unreached key.
type report struct {
	Leader  string `json:"leader"`
	Masters int    `json:"masters"`
}

func unreachedKey(prefix, self string) string {
	return prefix + "/unreached/" + url.QueryEscape(self)
}

// reportUnreached writes the standby's report while masters it hears
// cannot reach the leader, until ctx ends.
func reportUnreached(ctx context.Context, cli *clientv3.Client, prefix, self string, u *unreached) {
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, leader := u.count(time.Now())
		if n == 0 {
			continue
		}
		v, _ := json.Marshal(report{Leader: leader, Masters: n})
		if g, err := cli.Grant(ctx, reportTTL); err == nil {
			_, _ = cli.Put(ctx, unreachedKey(prefix, self), string(v), clientv3.WithLease(g.ID))
		}
	}
}

// watchUnreached runs while this LAN manager (self) leads, from election
// revision since: it calls stepDown when standbys report more masters
// that cannot reach it than are linked to it (linked), on two checks in
// a row.
func watchUnreached(ctx context.Context, cli *clientv3.Client, prefix, self string, since int64, linked func() int, stepDown func(cut, linked int)) {
	var cut, n int
	outnumbered := func() bool {
		cut = reported(ctx, cli, prefix, self, since)
		if cut == 0 {
			return false
		}
		n = linked()
		return cut > n
	}
	if strikes.Wait(ctx, checkEvery, 2, outnumbered) {
		stepDown(cut, n)
	}
}

// reported is the most masters one standby reports it cannot relay to
// self, counting only reports written after revision since.
func reported(ctx context.Context, cli *clientv3.Client, prefix, self string, since int64) int {
	resp, err := cli.Get(ctx, prefix+"/unreached/", clientv3.WithPrefix())
	if err != nil {
		return 0
	}
	most := 0
	for _, kv := range resp.Kvs {
		var r report
		if kv.ModRevision > since && json.Unmarshal(kv.Value, &r) == nil && r.Leader == self {
			most = max(most, r.Masters)
		}
	}
	return most
}
