package lanmanager

import (
	"context"
	"fmt"
	"time"

	"github.com/gorilla/websocket"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/lanstate"
	"github.com/allex-go/allex/lanwire"
)

// event is something for the loop: a link's hello, frame or end, a port
// check's result, an admin call.
type event interface{}

type (
	evOpen  struct{ sess *session }
	evHello struct {
		sess  *session
		hello *lanwire.Hello
	}
	evFrame struct {
		sess    *session
		typ     string
		payload any
	}
	evEnded struct {
		sess           *session
		how            lanstate.End
		lastHeard, end time.Time
	}
	evCheck struct {
		instance string
		id       uint64
		err      error
	}
	evCall struct {
		fn   func(time.Time, *lanstate.State) error
		done chan error
	}
	evWatch struct {
		w    *watcher
		done chan []lanwire.ServiceRecord
	}
	evUnwatch struct{ w *watcher }
)

// maxBatch events applied start a commit without waiting for
// commitEvery; while a commit is in flight, the loop applies no more than
// maxBatch events before waiting for it, so a slow disk slows the links
// and admin calls down instead of growing the loop's memory.
const maxBatch = 2048

// loop owns the state, the sessions and the watchers.
type loop struct {
	s        *Server
	st       *lanstate.State
	sessions map[lanstate.SessionID]*session
	watchers map[*watcher]struct{}
	ctx      context.Context
	// after the batch's commit: admin answers and watch registrations.
	replies []func(error)
	// committing is the batch whose commit runs while the next batch is
	// applied; its effects are carried out once it is on disk.
	committing *inflight
	// batchEvents are the events of the batch whose replies run.
	batchEvents []adminapi.ServiceEvent
	// backlogCap overrides watchBacklog in tests.
	backlogCap int
	// applied counts the events applied since the last commit started.
	applied    int
	lastCommit time.Time
}

// inflight is a batch being committed: what to do once it is stored.
type inflight struct {
	fx      lanstate.Effects
	replies []func(error)
	done    chan error
}

// watcher is one watch stream. Events that do not fit its channel wait
// in backlog, in the loop, up to watchBacklog: a burst (a batch that
// publishes thousands of services) is absorbed, a stream that stays
// behind is cut off.
type watcher struct {
	module  string
	ch      chan adminapi.ServiceEvent
	backlog []adminapi.ServiceEvent // from head on
	head    int
}

// watchBacklog bounds the events held for one watcher beyond its channel.
const watchBacklog = 1 << 16

// backlogRetry is how soon the loop tries again to move a backlog into
// its channel when no event wakes it sooner.
const backlogRetry = 5 * time.Millisecond

// newLoop restores the state and commits what the needs files changed.
func (s *Server) newLoop(now time.Time) (*loop, error) {
	snap, err := s.store.Load()
	if err != nil {
		return nil, fmt.Errorf("lanmanager: %w", err)
	}
	st := lanstate.New(lanstate.Config{
		Timings:             s.cfg.timings(),
		Margin:              s.cfg.Margin,
		RetryBackoffInitial: s.cfg.RetryBackoffInitial,
		RetryBackoffMax:     s.cfg.RetryBackoffMax,
		CrashLoopLimit:      s.cfg.CrashLoopLimit,
		CrashLoopWindow:     s.cfg.CrashLoopWindow,
		OfferWindow:         s.cfg.OfferWindow,
		MaxPlacing:          s.cfg.MaxPlacing,
		DeclineHold:         s.cfg.DeclineHold,
		Logger:              s.log,
	}, snap, s.files, now)
	if err := s.store.Commit(st.TakeEffects(now).Store); err != nil {
		return nil, fmt.Errorf("lanmanager: merge needs files: %w", err)
	}
	s.creds.Store(newAuthTable(snap))
	return &loop{s: s, st: st, sessions: map[lanstate.SessionID]*session{}, watchers: map[*watcher]struct{}{}}, nil
}

// run applies events as they come until ctx is done or a commit fails.
// What they change is committed (one transaction, one sync) while the
// next events are applied, at most once per commitEvery unless maxBatch
// events wait, and its effects are carried out once it is on disk. A
// failed commit stops the LAN manager: its memory is then ahead of its
// disk, and a restart from the disk is the only consistent state (no
// frame of the failed batch, or of a later one, has left).
func (l *loop) run(ctx context.Context) (err error) {
	l.ctx = ctx
	close(l.s.running)
	defer func() {
		if l.committing != nil {
			if ferr := l.finish(<-l.committing.done); err == nil {
				err = ferr
			}
		}
		l.s.stopErr = err
		close(l.s.stopped)
		l.shutdown()
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		l.arm(timer)
		var batch []event
		var committed <-chan error
		calls, events := l.s.calls, l.s.events
		if l.committing != nil {
			committed = l.committing.done
			if l.applied >= maxBatch {
				calls, events = nil, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-committed:
			if err := l.finish(err); err != nil {
				return err
			}
		case e := <-calls:
			batch = append(batch, e)
		case e := <-events:
			batch = append(batch, e)
		case <-timer.C:
		}
		batch = drain(batch, calls)
		batch = drain(batch, events)
		l.step(batch)
		if l.committing == nil && l.applied > 0 && (l.applied >= maxBatch || !time.Now().Before(l.lastCommit.Add(commitEvery))) {
			l.commit()
		}
	}
}

// commitEvery spaces commits out, so that a commit's fixed cost (its
// sync above all) is shared by the events of a few milliseconds.
const commitEvery = 10 * time.Millisecond

// step applies a batch, and what is due.
func (l *loop) step(batch []event) {
	now := time.Now()
	if next, ok := l.st.Next(); ok && !now.Before(next) {
		l.st.Tick(now)
		l.applied++
	}
	for _, e := range batch {
		l.apply(now, e)
	}
	l.applied += len(batch)
}

// commit takes what the applied events require and starts committing it.
func (l *loop) commit() {
	now := time.Now()
	p := &inflight{fx: l.st.TakeEffects(now), replies: l.replies, done: make(chan error, 1)}
	l.replies, l.applied, l.lastCommit = nil, 0, now
	l.committing = p
	if p.fx.Store.Empty() {
		p.done <- nil
		return
	}
	// The batch holds copies of the records: the state may move on.
	go func() { p.done <- l.s.store.Commit(p.fx.Store) }()
}

// drain adds the events waiting in ch to batch, up to maxBatch.
func drain(batch []event, ch <-chan event) []event {
	for len(batch) < maxBatch {
		select {
		case e := <-ch:
			batch = append(batch, e)
		default:
			return batch
		}
	}
	return batch
}

func (l *loop) arm(t *time.Timer) {
	next, ok := l.st.Next()
	d := time.Hour
	if ok {
		d = max(time.Until(next), 0)
	}
	if l.flushWatchers() {
		d = min(d, backlogRetry)
	}
	if l.applied > 0 && l.committing == nil {
		d = min(d, max(time.Until(l.lastCommit.Add(commitEvery)), 0))
	}
	t.Reset(d)
}

// finish carries out the effects of the batch being committed, or stops
// the LAN manager if its commit failed.
func (l *loop) finish(err error) error {
	p := l.committing
	l.committing = nil
	if err != nil {
		l.s.log.Error("cannot store the LAN's state; stopping (a restart resumes from the last commit)", "error", err)
		for _, r := range p.replies {
			r(err)
		}
		return fmt.Errorf("lanmanager: %w", err)
	}
	if len(p.fx.Store.Tokens) > 0 || len(p.fx.Store.Revoked) > 0 {
		l.s.creds.Store(l.s.creds.Load().with(p.fx.Store))
	}
	l.carryOut(p.fx)
	l.batchEvents = p.fx.Events
	for _, r := range p.replies {
		r(nil)
	}
	l.batchEvents = nil
	return nil
}

func (l *loop) apply(now time.Time, e event) {
	switch e := e.(type) {
	case evOpen:
		l.sessions[e.sess.id] = e.sess
	case evHello:
		l.st.Hello(now, e.sess.id, e.hello)
	case evFrame:
		l.st.Frame(now, e.sess.id, e.typ, e.payload)
	case evEnded:
		delete(l.sessions, e.sess.id)
		l.st.Ended(now, e.sess.id, e.how, e.lastHeard, e.end)
	case evCheck:
		l.st.CheckDone(now, e.instance, e.id, e.err)
	case evCall:
		err := e.fn(now, l.st)
		l.replies = append(l.replies, func(commitErr error) {
			if commitErr != nil {
				err = commitErr
			}
			e.done <- err
		})
	case evWatch:
		current := l.st.Services(lanstate.ServiceFilter{Module: e.w.module})
		from := l.st.PendingEvents()
		l.replies = append(l.replies, func(error) {
			// Registered after the commit, with the current services and
			// the events of its batch that came after them, so it sees
			// each later event once and none twice.
			l.watchers[e.w] = struct{}{}
			e.done <- current
			for _, ev := range l.batchEvents[min(from, len(l.batchEvents)):] {
				l.emitTo(e.w, ev)
			}
		})
	case evUnwatch:
		delete(l.watchers, e.w)
	}
}

// carryOut does what a committed batch asks for.
func (l *loop) carryOut(fx lanstate.Effects) {
	// A session to close answers no more pings from now, before any frame
	// of this batch (a replacing session's welcome) leaves; its own
	// frames are still flushed before its close frame.
	for _, c := range fx.Closes {
		if sess := l.sessions[c.Session]; sess != nil {
			sess.end(lanstate.EndLease)
		}
	}
	for _, sd := range fx.Sends {
		if sess := l.sessions[sd.Session]; sess != nil {
			sess.sendFrame(sd.Type, sd.Payload, l.s.log)
		}
	}
	for _, c := range fx.Closes {
		if sess := l.sessions[c.Session]; sess != nil {
			sess.kill(c.Code, c.Reason)
		}
	}
	for _, c := range fx.Checks {
		l.startCheck(c)
	}
	for _, ev := range fx.Events {
		l.emit(ev)
	}
}

func (l *loop) startCheck(c lanstate.Check) {
	if !l.s.track(1) {
		return
	}
	go func() {
		defer l.s.wg.Done()
		err := l.s.checkPorts(l.ctx, c.Address, c.Need, c.Ports)
		l.s.post(evCheck{instance: c.Instance, id: c.ID, err: err})
	}()
}

func (l *loop) emit(ev adminapi.ServiceEvent) {
	for w := range l.watchers {
		l.emitTo(w, ev)
	}
}

func (l *loop) emitTo(w *watcher, ev adminapi.ServiceEvent) {
	if _, ok := l.watchers[w]; !ok || w.module != "" && w.module != ev.Service.Module {
		return
	}
	if w.head == len(w.backlog) {
		select {
		case w.ch <- ev:
			return
		default:
		}
	}
	if len(w.backlog)-w.head >= l.maxBacklog() {
		// A watcher that cannot keep up is cut off rather than allowed
		// to grow the loop's memory; it sees the stream end.
		close(w.ch)
		delete(l.watchers, w)
		return
	}
	if w.head > 0 && len(w.backlog) == cap(w.backlog) {
		n := copy(w.backlog, w.backlog[w.head:])
		clear(w.backlog[n:])
		w.backlog, w.head = w.backlog[:n], 0
	}
	w.backlog = append(w.backlog, ev)
}

func (l *loop) maxBacklog() int {
	if l.backlogCap > 0 {
		return l.backlogCap
	}
	return watchBacklog
}

// flushWatchers moves what fits of each backlog into its channel, and
// says whether some backlog is left.
func (l *loop) flushWatchers() (left bool) {
	for w := range l.watchers {
	fill:
		for w.head < len(w.backlog) {
			select {
			case w.ch <- w.backlog[w.head]:
				w.backlog[w.head] = adminapi.ServiceEvent{}
				w.head++
			default:
				break fill
			}
		}
		if w.head == len(w.backlog) {
			w.backlog, w.head = nil, 0
		}
		left = left || len(w.backlog) > 0
	}
	return left
}

// shutdown closes every link and watcher once the loop has ended.
func (l *loop) shutdown() {
	for _, r := range l.replies {
		r(errStopped)
	}
	l.replies = nil
	for _, sess := range l.sessions {
		sess.kill(websocket.CloseGoingAway, "LAN manager stopping")
	}
	for w := range l.watchers {
		close(w.ch)
	}
	l.watchers = nil
}
