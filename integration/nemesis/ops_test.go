//go:build linux

package nemesis

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// opKind describes a kind of operation.
type opKind struct {
	name, title string
}

var opKinds = map[string]opKind{
	"kill":       {"kill", "kill -9 master, restart 15s later"},
	"stop":       {"stop", "SIGSTOP master 20s"},
	"cut":        {"cut", "cut master's link 30s"},
	"lmkill":     {"lmkill", "kill -9 LAN manager, restart 3s later"},
	"clone":      {"clone", "clone: same machine id, fresh state, 15s"},
	"second":     {"second", "second master, live master's config"},
	"secondsock": {"secondsock", "second master, live state dir, own socket"},
}

var kindOrder = []string{"kill", "stop", "cut", "lmkill", "clone", "second", "secondsock"}

// opRecord is one operation and what the checker saw of it.
type opRecord struct {
	N            int
	Kind, Target string
	// Held: the copies the target ran when the fault began.
	Held                 int
	Added                string // the need added just before the fault
	AddErr               string
	Start, End, Settled  time.Time // End: the fault is over (restarted, continued, healed, gone)
	Recovered, Avail     time.Duration
	RecoveredOK, AvailOK bool
	Disrupted            time.Duration // not ok between Start and Settled
	// Relapses: times the LAN stopped being ok after Recovered, before
	// Settled, and for how long in all.
	Relapses int
	Relapsed time.Duration
	Why      string // why not ok when the harness gave up waiting
	// A second master on a live state dir: how it ended, and how many of
	// the live master's children died meanwhile.
	SecondErr                    string
	SecondRunning                bool
	ChildrenBefore, ChildrenDied int
	Notes                        []string
}

func (op *opRecord) title() string {
	return fmt.Sprintf("#%d %s %s", op.N, op.Kind, op.Target)
}

// isSecond: a second master on a live master's state dir.
func isSecond(kind string) bool { return kind == "second" || kind == "secondsock" }

func (op *opRecord) summary() string {
	back := "not back to one copy: " + op.Why
	if op.RecoveredOK {
		back = "back to one copy in " + op.Recovered.Round(time.Millisecond).String()
	}
	serving := "never"
	if op.AvailOK {
		serving = op.Avail.Round(time.Millisecond).String()
	}
	s := fmt.Sprintf("%s: %s (all serving after %s, not ok for %s)", op.title(), back, serving, op.Disrupted.Round(time.Millisecond))
	if op.Relapses > 0 {
		s += fmt.Sprintf(", then not ok again %d times for %s", op.Relapses, op.Relapsed.Round(time.Millisecond))
	}
	if isSecond(op.Kind) {
		s += "; " + op.secondOutcome()
	}
	if len(op.Notes) > 0 {
		s += "; " + strings.Join(op.Notes, "; ")
	}
	return s
}

func (op *opRecord) secondOutcome() string {
	how := "refused: " + op.SecondErr
	switch {
	case op.SecondRunning:
		how = fmt.Sprintf("did not refuse: still running after %s, stopped", secondWait)
	case op.SecondErr == "exit 0":
		how = "exited cleanly instead of refusing"
	}
	return fmt.Sprintf("%s; %d of the live master's %d children died", how, op.ChildrenDied, op.ChildrenBefore)
}

// run plays one operation of kind against a random master.
func (c *cluster) run(kind string, rng *rand.Rand) *opRecord {
	op := &opRecord{N: len(c.ops) + 1, Kind: kind}
	c.ops = append(c.ops, op)
	m := c.pickMaster(rng)
	op.Target, op.Held = m.id, len(c.chk.copiesOf(m.socket))
	var err error
	switch kind {
	case "kill":
		err = c.killMaster(op, m)
	case "stop":
		err = c.stopMaster(op, m)
	case "cut":
		err = c.cutMaster(op, m)
	case "lmkill":
		op.Target = "lm"
		err = c.killLM(op)
	case "clone":
		err = c.clone(op, m)
	case "second", "secondsock":
		err = c.second(op, m, kind == "secondsock")
	}
	if err != nil {
		c.t.Fatalf("%s: %v", op.title(), err)
	}
	return op
}

// pickMaster draws a master with odds in proportion to the copies it runs
// now: a fault on an idle master tests nothing, and needs do not move
// back to a master after a fault moved them off it. (So a rerun with the
// same seed draws the same kinds in the same order, but its targets may
// differ where the placement of needs differs.)
func (c *cluster) pickMaster(rng *rand.Rand) *master {
	weights := make([]int, len(c.masters))
	total := 0
	for i, m := range c.masters {
		weights[i] = len(c.chk.copiesOf(m.socket))
		total += weights[i]
	}
	if total == 0 {
		return c.masters[rng.IntN(len(c.masters))]
	}
	r := rng.IntN(total)
	for i, w := range weights {
		if r < w {
			return c.masters[i]
		}
		r -= w
	}
	return c.masters[len(c.masters)-1]
}

// opNeed adds a need for the operation: one second into a master's fault
// (the LAN manager may not know yet and grant it to the lost master),
// right before the LAN manager is killed (the 201 must have made it
// durable), and before a clone or second master starts (waiting until it
// runs, so that only the intruder can disturb the LAN).
func (c *cluster) opNeed(op *opRecord) {
	c.added++
	op.Added = fmt.Sprintf("%sa%03d", c.prefix, c.added)
	if err := c.addNeed(op.Added); err != nil {
		op.AddErr = err.Error()
		op.Notes = append(op.Notes, "need "+op.Added+" not acknowledged: "+op.AddErr)
	}
}

// opNeedSettled is opNeed, then a wait (bounded) until the LAN is ok.
func (c *cluster) opNeedSettled(op *opRecord) {
	c.opNeed(op)
	added := time.Now()
	if err := bounded(10*time.Second, func() error {
		if !c.chk.okSince(added) {
			return fmt.Errorf("not ok: %s", c.chk.why())
		}
		return nil
	}); err != nil {
		op.Notes = append(op.Notes, "LAN not ok before the fault: "+err.Error())
	}
}

func (c *cluster) killMaster(op *opRecord, m *master) error {
	c.chk.setFaulted(m.socket, true)
	op.Start = time.Now()
	if err := m.proc.kill9(); err != nil {
		return err
	}
	time.Sleep(time.Until(op.Start.Add(time.Second)))
	c.opNeed(op)
	time.Sleep(time.Until(op.Start.Add(restartAfter)))
	err := c.startMaster(m)
	op.End = time.Now()
	return err
}

func (c *cluster) stopMaster(op *opRecord, m *master) error {
	c.chk.setFaulted(m.socket, true)
	op.Start = time.Now()
	if err := m.proc.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	time.Sleep(time.Until(op.Start.Add(time.Second)))
	c.opNeed(op)
	time.Sleep(time.Until(op.Start.Add(stopFor)))
	err := m.proc.signal(syscall.SIGCONT)
	c.chk.setFaulted(m.socket, false)
	op.End = time.Now()
	return err
}

func (c *cluster) cutMaster(op *opRecord, m *master) error {
	op.Start = time.Now()
	if err := m.host.Cut(); err != nil {
		return err
	}
	time.Sleep(time.Until(op.Start.Add(time.Second)))
	c.opNeed(op)
	time.Sleep(time.Until(op.Start.Add(cutFor)))
	err := m.host.Heal()
	op.End = time.Now()
	return err
}

func (c *cluster) killLM(op *opRecord) error {
	c.opNeed(op)
	op.Start = time.Now()
	if err := c.lm.proc.kill9(); err != nil {
		return err
	}
	time.Sleep(lmDownFor)
	err := c.startLM()
	op.End = time.Now()
	return err
}

// clone starts a master with m's machine id and a fresh state dir on the
// spare host, and stops it (SIGTERM) after cloneFor.
func (c *cluster) clone(op *opRecord, m *master) error {
	c.clones++
	h := c.lan.Host("clone")
	dir := filepath.Join(c.dir, fmt.Sprintf("clone%d", c.clones))
	socket := filepath.Join(dir, "m.sock")
	label := fmt.Sprintf("clone%d(%s)", c.clones, m.id)
	c.opNeedSettled(op)
	c.writeConfig(dir, m.id, h, socket)
	c.chk.addSupervisor(socket, label, h, true)
	p, err := startProc(h, label, dir, c.logPath(fmt.Sprintf("clone%d", c.clones), 1), c.nice, filepath.Join(c.bin, "allexmaster"), "-log-level", "info")
	if err != nil {
		return err
	}
	c.chk.setProc(socket, p)
	op.Start = time.Now()
	if err := waitSocket(p, socket); err != nil {
		op.Notes = append(op.Notes, "clone did not come up: "+firstLine(err.Error()))
	}
	time.Sleep(time.Until(op.Start.Add(cloneFor)))
	if err := p.stop(20 * time.Second); err != nil && p.err == nil {
		op.Notes = append(op.Notes, "clone: "+err.Error())
	}
	op.End = time.Now()
	return nil
}

// second starts another master on m's state dir while m runs: with m's
// own config (same socket), or with its own socket (-socket). It must
// refuse and touch nothing.
func (c *cluster) second(op *opRecord, m *master, ownSocket bool) error {
	c.opNeedSettled(op)
	before := c.chk.copiesOf(m.socket)
	op.ChildrenBefore = len(before)
	args := []string{"-log-level", "info"}
	socket := m.socket
	if ownSocket {
		socket = filepath.Join(m.dir, "second.sock")
		args = append(args, "-socket", socket)
		c.chk.addSupervisor(socket, m.id+"/second", m.host, true)
	}
	p, err := startProc(m.host, m.id+"/second", m.dir, c.logPath(m.id+"-second", op.N), c.nice, filepath.Join(c.bin, "allexmaster"), args...)
	if err != nil {
		return err
	}
	if socket != m.socket {
		c.chk.setProc(socket, p)
	}
	op.Start = time.Now()
	exited, err := p.wait(secondWait)
	if exited {
		op.SecondErr = exitErr(err)
	} else {
		op.SecondRunning = true
		_ = p.stop(20 * time.Second)
	}
	op.End = time.Now()
	// A child killed at the end is gone within this.
	time.Sleep(time.Second)
	for _, k := range before {
		if !alive(k) {
			op.ChildrenDied++
		}
	}
	return nil
}

// settle waits until every need is back to one published copy and has
// stayed so for settleQuiet, so that late effects of the fault (timers
// running out after it) are still this operation's; bounded by
// -nemesis.settle after the fault's end. Then it records the times.
func (c *cluster) settle(op *opRecord) {
	limit := op.End.Add(c.p.settle)
	quiet := false
	for i := 0; i < int(c.p.settle/(100*time.Millisecond))+10 && time.Now().Before(limit); i++ {
		if !op.RecoveredOK {
			op.Recovered, op.RecoveredOK = c.chk.recovery(op.Start, op.End, stableFor, okPick)
		}
		if quiet = op.RecoveredOK && c.chk.okFor() >= settleQuiet; quiet {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	switch {
	case !op.RecoveredOK:
		op.Why = c.chk.why()
		c.removeLeftovers(op)
	case !quiet:
		op.Notes = append(op.Notes, fmt.Sprintf("not ok for %s in a row before the next operation: %s", settleQuiet, c.chk.why()))
	}
	op.Avail, op.AvailOK = c.chk.recovery(op.Start, op.End, stableFor, availPick)
	op.Settled = time.Now()
	op.Disrupted = c.chk.notOK(op.Start, op.Settled)
	if op.RecoveredOK {
		op.Relapses, op.Relapsed = c.chk.relapses(op.Start.Add(op.Recovered), op.Settled)
	}
}

// removeLeftovers kills copies left by clones and second masters that are
// gone: nothing would ever stop them, and they would spoil every later
// measurement. The report says so.
func (c *cluster) removeLeftovers(op *opRecord) {
	for label, keys := range c.chk.leftovers() {
		for _, k := range keys {
			if alive(k) {
				_ = syscall.Kill(-k.PID, syscall.SIGKILL)
			}
		}
		op.Notes = append(op.Notes, fmt.Sprintf("harness killed %d copies left by %s after it was gone", len(keys), label))
	}
}

// opAt names the operation in progress at t.
func (c *cluster) opAt(t time.Time) string {
	name := "setup"
	for _, op := range c.ops {
		if !op.Start.IsZero() && !t.Before(op.Start) {
			name = op.title()
		}
	}
	return name
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
