package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
)

// WatchServices streams the service events of the LAN under prefix, as
// etcd holds them, to emit: when since is 0, first an "up" per current
// service (read at one revision); then every change after that revision
// (or after since), each with its revision. A service whose machine's
// session expired goes "down" like one its master reported. emit(nil)
// says the watch is established. It returns when ctx ends, when emit
// fails, or when etcd ends the watch (adminapi.ErrCompacted when since
// is older than etcd keeps). Any LAN manager, leader or not, may serve
// it.
func WatchServices(ctx context.Context, cli *clientv3.Client, prefix, module string, since int64, emit func([]adminapi.ServiceEvent) error) error {
	dir := strings.TrimSuffix(prefix, "/") + "/services/"
	if since == 0 {
		rev, err := servicesAt(ctx, cli, dir, module, emit)
		if err != nil {
			return err
		}
		since = rev
	} else if err := kept(ctx, cli, dir, since); err != nil {
		return err
	}
	// RequireLeader ends the watch when its etcd member loses quorum, so
	// the watcher hears of it instead of waiting on a silent member.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, dir, clientv3.WithPrefix(), clientv3.WithRev(since+1), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	for wr := range wch {
		if err := wr.Err(); err != nil {
			if wr.CompactRevision != 0 {
				return fmt.Errorf("%w: revision %d is gone, etcd keeps from %d", adminapi.ErrCompacted, since, wr.CompactRevision)
			}
			return err
		}
		evs := serviceEvents(dir, module, wr.Events)
		if (wr.Created || len(evs) > 0) && emit(evs) != nil {
			return nil
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("etcd ended the watch")
}

// kept checks, before anything is streamed, that etcd still keeps the
// history after revision since: a read at since fails once it is
// compacted (the watch itself would say so only after it is created).
func kept(ctx context.Context, cli *clientv3.Client, dir string, since int64) error {
	_, err := cli.Get(ctx, dir, clientv3.WithPrefix(), clientv3.WithRev(since), clientv3.WithCountOnly())
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("%w: revision %d is gone (compacted); watch again from the start", adminapi.ErrCompacted, since)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return fmt.Errorf("%w: since=%d is past the store's latest revision", adminapi.ErrInvalid, since)
	}
	return err
}

// servicesAt emits the current services, read a page at a time at one
// revision, and returns that revision.
func servicesAt(ctx context.Context, cli *clientv3.Client, dir, module string, emit func([]adminapi.ServiceEvent) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(dir)
	from, rev := dir, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		var evs []adminapi.ServiceEvent
		for _, kv := range resp.Kvs {
			if rec, ok := decodeService(dir, kv.Key, kv.Value); ok && wanted(module, rec) {
				evs = append(evs, adminapi.ServiceEvent{Type: adminapi.EventUp, Service: rec, Revision: rev})
			}
		}
		if err := emit(evs); err != nil {
			return 0, err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// serviceEvents turns etcd events into service events: a put is "up"
// (after a "down" of the process it replaces), a delete or an expiry is
// "down". A put of the same record (a session's lease renewed) is none.
func serviceEvents(dir, module string, in []*clientv3.Event) []adminapi.ServiceEvent {
	var out []adminapi.ServiceEvent
	for _, ev := range in {
		rev := ev.Kv.ModRevision
		var prev *lanwire.ServiceRecord
		if ev.PrevKv != nil {
			if p, ok := decodeService(dir, ev.PrevKv.Key, ev.PrevKv.Value); ok {
				prev = &p
			}
		}
		if ev.Type == clientv3.EventTypeDelete {
			if prev == nil {
				prev = &lanwire.ServiceRecord{Instance: strings.TrimPrefix(string(ev.Kv.Key), dir)}
			}
			if module == "" || prev.Module == module {
				out = append(out, adminapi.ServiceEvent{Type: adminapi.EventDown, Service: *prev, Revision: rev})
			}
			continue
		}
		rec, ok := decodeService(dir, ev.Kv.Key, ev.Kv.Value)
		if !ok || !wanted(module, rec) || ev.PrevKv != nil && bytes.Equal(ev.PrevKv.Value, ev.Kv.Value) {
			continue
		}
		if prev != nil && (prev.PID != rec.PID || prev.Epoch != rec.Epoch || prev.MachineID != rec.MachineID) {
			out = append(out, adminapi.ServiceEvent{Type: adminapi.EventDown, Service: *prev, Revision: rev})
		}
		out = append(out, adminapi.ServiceEvent{Type: adminapi.EventUp, Service: rec, Revision: rev})
	}
	return out
}

func decodeService(dir string, k, v []byte) (lanwire.ServiceRecord, bool) {
	var rec lanwire.ServiceRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, false
	}
	if rec.Instance == "" {
		rec.Instance = strings.TrimPrefix(string(k), dir)
	}
	return rec, true
}

func wanted(module string, rec lanwire.ServiceRecord) bool {
	return module == "" || rec.Module == module
}
