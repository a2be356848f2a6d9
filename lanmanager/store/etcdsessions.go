package store

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allex-go/allex/lanwire"
)

// Machine sessions. Every machine linked to the leader has an etcd lease
// of SessionTTL and a key <prefix>/sessions/<id> under it; the leader
// keeps the lease alive while the machine is linked (Batch.Linked). A
// published service is the key <prefix>/services/<instance> under its
// machine's lease, so it goes when its machine is no longer heard by any
// LAN manager, even when no LAN manager is alive to delete it. The
// instance record keeps the grant (machine, epoch, phase) without the
// service: the grant decides placement, the service key only says where
// to find it.
//
// A lease found gone (it expired while no leader renewed it) is replaced
// by a new one, and the machine's services are written under it again.

// session is a machine's lease and whether this LAN manager hears it.
type session struct {
	lease  clientv3.LeaseID // 0: none yet
	linked bool
	stop   context.CancelFunc // its keepalive, while linked with a lease
}

// servicePut is a service key this store holds: written or loaded.
type servicePut struct {
	machine string
	value   string
}

func (e *Etcd) session(id string) *session {
	s := e.sessions[id]
	if s == nil {
		s = &session{}
		e.sessions[id] = s
	}
	return s
}

// leaseFor returns machine id's lease, granting one (and appending the
// write of its session key to ops) when it has none.
func (e *Etcd) leaseFor(id string, ops []clientv3.Op) (clientv3.LeaseID, []clientv3.Op, error) {
	s := e.session(id)
	if s.lease != 0 {
		return s.lease, ops, nil
	}
	lease, err := e.grant(e.ctx)
	if err != nil {
		return 0, ops, err
	}
	s.lease = lease
	return lease, append(ops, e.sessionPut(id, lease)), nil
}

func (e *Etcd) sessionPut(id string, lease clientv3.LeaseID) clientv3.Op {
	return clientv3.OpPut(e.key("sessions", id), strconv.FormatInt(int64(lease), 16), clientv3.WithLease(lease))
}

// grant grants a lease of SessionTTL, again while e.retry allows.
func (e *Etcd) grant(ctx context.Context) (clientv3.LeaseID, error) {
	secs := int64((e.SessionTTL + time.Second - 1) / time.Second)
	var id clientv3.LeaseID
	err := e.try(func(ctx context.Context) error {
		g, err := e.cli.Grant(ctx, secs)
		if err == nil {
			id = g.ID
		}
		return err
	})
	return id, err
}

// serviceOps appends the service key writes of a batch's instances:
// a put under its machine's lease for each published copy whose key does
// not hold it yet, a delete for each service key held that is no longer
// wanted. puts records them.
func (e *Etcd) serviceOps(b Batch, ops, dels []clientv3.Op, puts map[string]*servicePut) (_, _ []clientv3.Op, err error) {
	for _, k := range e.stale {
		dels = append(dels, clientv3.OpDelete(e.key("services", k)))
	}
	for _, k := range sortedKeys(b.Instances) {
		in := b.Instances[k]
		if in == nil || in.Copy == nil || in.Copy.Service == nil {
			if _, ok := e.services[k]; ok {
				dels = append(dels, clientv3.OpDelete(e.key("services", k)))
				puts[k] = nil
			}
			continue
		}
		v, err := json.Marshal(in.Copy.Service)
		if err != nil {
			return nil, nil, err
		}
		if p, ok := e.services[k]; ok && p == (servicePut{machine: in.Copy.Machine, value: string(v)}) {
			continue // already stored, under the machine's current lease (renew rewrites them all)
		}
		lease, more, err := e.leaseFor(in.Copy.Machine, ops)
		if err != nil {
			return nil, nil, err
		}
		ops = append(more, clientv3.OpPut(e.key("services", k), string(v), clientv3.WithLease(lease)))
		puts[k] = &servicePut{machine: in.Copy.Machine, value: string(v)}
	}
	return ops, dels, nil
}

// committed records a stored batch's service keys and starts or stops
// the keepalives its links ask for.
func (e *Etcd) committed(b Batch, puts map[string]*servicePut) {
	e.stale = nil
	for k, p := range puts {
		if p == nil {
			delete(e.services, k)
		} else {
			e.services[k] = *p
		}
	}
	for id, m := range b.Machines {
		if s := e.sessions[id]; m == nil && s != nil && s.stop != nil {
			s.stop()
			s.stop = nil
		}
	}
	for id, up := range b.Linked {
		s := e.session(id)
		s.linked = up
		e.keep(id, s)
	}
}

// keep starts a machine's keepalive when it is linked and leased, and
// stops it when it is not.
func (e *Etcd) keep(id string, s *session) {
	switch on := s.linked && s.lease != 0; {
	case on && s.stop == nil:
		ctx, cancel := context.WithCancel(e.ctx)
		s.stop = cancel
		go e.keepAlive(ctx, id, s.lease)
	case !on && s.stop != nil:
		s.stop()
		s.stop = nil
	}
}

// keepAlive renews lease until ctx ends. When etcd says the lease is
// gone, it moves the machine to a new one.
func (e *Etcd) keepAlive(ctx context.Context, id string, lease clientv3.LeaseID) {
	for ctx.Err() == nil {
		if ch, err := e.cli.KeepAlive(ctx, lease); err == nil {
			for range ch {
			}
		}
		if ctx.Err() != nil {
			return
		}
		// The channel closed: the lease is gone, or etcd did not answer
		// within its TTL (then the same lease is tried again).
		if ttl, err := e.cli.TimeToLive(ctx, lease); err == nil && ttl.TTL <= 0 && e.renew(ctx, id, lease) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(retryEvery):
		}
	}
}

// renew gives machine id a new lease in place of old and writes its
// session and service keys under it again. It says whether it is done:
// renewed, or no longer wanted.
func (e *Etcd) renew(ctx context.Context, id string, old clientv3.LeaseID) bool {
	lease, err := e.grant(ctx)
	if err != nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.sessions[id]
	if ctx.Err() != nil || s == nil || s.lease != old {
		e.revoke(lease)
		return true
	}
	ops := []clientv3.Op{e.sessionPut(id, lease)}
	for _, k := range sortedKeys(e.services) {
		if p := e.services[k]; p.machine == id {
			ops = append(ops, clientv3.OpPut(e.key("services", k), p.value, clientv3.WithLease(lease)))
		}
	}
	if err := e.txns(ops); err != nil {
		e.revoke(lease)
		return err == ErrNotLeader
	}
	s.stop()
	s.lease, s.stop = lease, nil
	e.keep(id, s)
	return true
}

func (e *Etcd) revoke(lease clientv3.LeaseID) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), e.Timeout)
		defer cancel()
		_, _ = e.cli.Revoke(ctx, lease)
	}()
}

// loadServices reads the sessions and the service keys into s and the
// store's own view: a service is attached to its instance's published
// copy when machine and epoch match; a published copy without one is
// granted again (its master's reconcile publishes it anew); a service of
// no such copy is deleted by the next commit.
func (e *Etcd) loadServices(s *Snapshot) error {
	err := e.each(e.key("sessions")+"/", func(k, _ []byte, lease int64) error {
		e.session(string(k[len(e.key("sessions"))+1:])).lease = clientv3.LeaseID(lease)
		return nil
	})
	if err != nil {
		return err
	}
	byName := map[string]*Copy{}
	for _, in := range s.Instances {
		if in.Copy != nil && in.Copy.Phase == PhasePublished {
			byName[in.Need.Instance] = in.Copy
		}
	}
	err = e.each(e.key("services")+"/", func(k, v []byte, lease int64) error {
		name := string(k[len(e.key("services"))+1:])
		var rec lanwire.ServiceRecord
		c := byName[name]
		if json.Unmarshal(v, &rec) != nil || c == nil || c.Machine != rec.MachineID || c.Epoch != rec.Epoch {
			e.stale = append(e.stale, name)
			return nil
		}
		c.Service = &rec
		e.services[name] = servicePut{machine: c.Machine, value: string(v)}
		e.session(c.Machine).lease = clientv3.LeaseID(lease)
		return nil
	})
	for _, c := range byName {
		if c.Service == nil {
			c.Phase = PhaseGranted
		}
	}
	return err
}
