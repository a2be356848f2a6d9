package spawner

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/agent/logfile"
)

// A child's stdout and stderr are pipes the master reads, each into a
// size-rotated log file (package logfile), so a child that writes as fast
// as it can neither fills the disk nor waits on anything but the disk.
// The files stay open across the child's runs; each run gets new pipes
// and a pump per stream that copies its pipe into the file.

// streams names the logged streams, in the order of the arrays below.
var streams = [2]string{"stdout", "stderr"}

// pipes are one run's stdout and stderr.
type pipes struct{ r, w [2]*os.File }

func openPipes() (*pipes, error) {
	p := &pipes{}
	for i := range streams {
		r, w, err := newPipe()
		if err != nil {
			p.closeAll()
			return nil, err
		}
		p.r[i], p.w[i] = r, w
	}
	return p, nil
}

// closeWrite closes the master's copies of the write ends once the child
// holds its own: the pipes end when the child's group is gone.
func (p *pipes) closeWrite() {
	for i, f := range p.w {
		if f != nil {
			_ = f.Close()
			p.w[i] = nil
		}
	}
}

func (p *pipes) closeAll() {
	p.closeWrite()
	for _, f := range p.r {
		if f != nil {
			_ = f.Close()
		}
	}
}

// pumpLimit bounds the waits on a pump that does not end: on the run
// before it (a pump waits for the previous run's to finish, so a run's
// last output precedes the next run's header), and for the last one
// when the supervisor ends. On Unix a pump ends as soon as it has emptied
// its pipe after finish; elsewhere a process outside the child that holds
// the pipe keeps it going.
const pumpLimit = 5 * time.Second

// pump copies one run's pipe into a log file.
type pump struct {
	r     *os.File
	done  chan struct{}
	limit time.Duration // pumpLimit; tests change it

	mu       sync.Mutex
	finished bool        // see finish
	polled   *polledPipe // set once the log poller copies the pipe (Linux)
}

// logWriter is where a pump writes: a *logfile.Writer.
type logWriter interface {
	Write([]byte) (int, error)
	Path() string
}

// startPump writes header, then copies r to w, after prev (if any) is
// done. Where it can, it hands the pipe to the log poller, which copies
// every child's pipes with one goroutine; else a goroutine per pipe
// copies it.
func startPump(r *os.File, w logWriter, prev *pump, header string, limit time.Duration, log hclog.Logger) *pump {
	p := &pump{r: r, done: make(chan struct{}), limit: limit}
	go func() {
		if prev != nil {
			prev.wait()
		}
		c := &copier{w: w, log: log}
		c.write([]byte(header))
		if !pollPipe(p, c) {
			p.copyHere(c)
		}
	}()
	return p
}

// copyHere copies the pipe in the calling goroutine until it ends.
func (p *pump) copyHere(c *copier) {
	defer close(p.done)
	defer p.r.Close()
	copyPipe(p.r, c)
	c.resumed()
}

// wait waits for the pump to end, at most its limit; it reports whether
// it ended.
func (p *pump) wait() bool {
	t := time.NewTimer(p.limit)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// finish makes the pump copy what its pipe holds and end: the run's group
// is dead, so what it wrote is all there, and a process that left the
// group cannot keep the pump (and the next run's) waiting. It does not
// wait for the copy.
func (p *pump) finish() {
	p.mu.Lock()
	p.finished = true
	pp := p.polled
	p.mu.Unlock()
	if pp != nil {
		go pp.finish()
		return
	}
	p.stopCopy()
}

// copier writes into a log file. A write that fails (a full disk) drops
// its bytes rather than stop reading the pipe, which would stop the
// child; the first failure of a run of them is logged, and the loss once
// writes work again.
type copier struct {
	w       logWriter
	log     hclog.Logger
	dropped int64
}

func (c *copier) write(b []byte) {
	n, err := c.w.Write(b)
	if err == nil {
		c.resumed()
		return
	}
	if c.dropped == 0 {
		c.log.Error("cannot write the child's log; dropping its output until it works again", "file", c.w.Path(), "error", err)
	}
	c.dropped += int64(len(b) - n)
}

func (c *copier) resumed() {
	if c.dropped > 0 {
		c.log.Warn("the child's log lost output", "file", c.w.Path(), "bytes", c.dropped)
		c.dropped = 0
	}
}

// openLogs opens the log files on the first run.
func (s *Supervisor) openLogs() error {
	if s.logs[0] != nil {
		return nil
	}
	var logs [2]*logfile.Writer
	for i, stream := range streams {
		w, err := logfile.NewWriter(LogPath(s.spec.LogDir, s.spec.Instance, stream), s.spec.LogMaxSize, s.spec.LogMaxFiles)
		if err != nil {
			if logs[0] != nil {
				_ = logs[0].Close()
			}
			return fmt.Errorf("spawner: %s: %w", s.spec.Instance, err)
		}
		logs[i] = w
	}
	s.logs = logs
	return nil
}

// startPumps starts copying a started run's pipes into the log files.
func (s *Supervisor) startPumps(p *pipes, pid int, started time.Time) {
	p.closeWrite()
	header := fmt.Sprintf("--- allex: start pid %d at %s ---\n", pid, started.UTC().Format(time.RFC3339))
	for i := range streams {
		s.pumps[i] = startPump(p.r[i], s.logs[i], s.pumps[i], header, s.pumpLimit, s.log)
	}
}

// finishPumps tells the run's pumps that its group is dead: they copy
// what is left in their pipes and end, without waiting for a writer that
// escaped the group.
func (s *Supervisor) finishPumps() {
	for _, p := range s.pumps {
		if p != nil {
			p.finish()
		}
	}
}

// closeLogs waits for the last pumps, then closes the log files.
func (s *Supervisor) closeLogs() {
	for i, p := range s.pumps {
		if p != nil && !p.wait() {
			s.log.Warn("the child's log pipe is still open after its group died; closing its file", "stream", streams[i])
		}
		if s.logs[i] != nil {
			_ = s.logs[i].Close()
		}
	}
}
