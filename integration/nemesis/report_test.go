//go:build linux

package nemesis

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// kindStats sums up the operations of one kind.
type kindStats struct {
	ran, withOverlaps, doubled, unrecovered int
	relapses                                int
	longest                                 time.Duration
	back, serving                           []time.Duration
	worstNotOK                              time.Duration
	refused, childrenDied                   int
}

// report renders the per-kind table, then each operation, then the
// longest overlaps. "Back to one copy" counts from the operation's start
// to the first second-long run of samples in which every acknowledged
// need had exactly one live copy, on a healthy master, published with its
// pid and address, after the operation first disturbed that (0: it never
// did). "All serving" is the same for at least one published copy on a
// healthy master per need, extra copies allowed. "Not ok again after"
// counts the times the LAN stopped being ok after that, before the next
// operation (late effects, e.g. a timer running out); reported, not
// asserted, since a clone's graceful stop legitimately moves needs.
func (c *cluster) report(res checkResults) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nemesis report: seed %d, %d operations in %s, %d needs acknowledged, LAN manager flags %q, binaries %s\n",
		c.p.seed, len(c.ops), time.Since(c.began).Round(time.Second), res.Acked, strings.Join(c.p.lmFlags, " "), c.bin)
	byOp := c.overlapsByOp(res.Overlaps)
	stats := map[string]*kindStats{}
	for _, op := range c.ops {
		s := stats[op.Kind]
		if s == nil {
			s = &kindStats{}
			stats[op.Kind] = s
		}
		s.add(op, byOp[op])
	}
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "operation\tran\twith overlaps\tinstances doubled\tlongest overlap\tback to one copy: worst / median\tall serving: worst / median\tnot recovered\tnot ok again after\tmost not-ok time\tbound")
	for _, k := range kindOrder {
		s := stats[k]
		if s == nil {
			fmt.Fprintf(w, "%s\t0\t\t\t\t\t\t\t\t\t%s\n", opKinds[k].title, c.p.boundText(k))
			continue
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", opKinds[k].title, s.ran, s.withOverlaps, s.doubled,
			round(s.longest), worstMedian(s.back), worstMedian(s.serving), s.unrecovered, s.relapses, round(s.worstNotOK), c.p.boundText(k))
	}
	w.Flush()
	for _, k := range []string{"second", "secondsock"} {
		if s := stats[k]; s != nil {
			fmt.Fprintf(&b, "%s: refused (exited with an error within %s) %d of %d; children of the live master that died: %d\n",
				opKinds[k].title, secondWait, s.refused, s.ran, s.childrenDied)
		}
	}
	if ovs := byOp[nil]; len(ovs) > 0 {
		fmt.Fprintf(&b, "overlaps while the needs were first added (setup): %d\n", len(ovs))
	}
	fmt.Fprintf(&b, "acknowledged needs missing from GET /v1/needs: %d%s\n", len(res.Missing), missingList(res.Missing))
	st := res.Stats
	fmt.Fprintf(&b, "sampling: %d process scans (longest gap %s at %s, longest scan %s, %d gaps over %s), %d registry reads (%d answered, longest gap %s); scans showing an overlap: %d, most instances doubled at once: %d; registry reads listing an instance twice: %d\n",
		st.Scans, st.MaxScanGap.Round(time.Millisecond), c.sinceStart(st.MaxScanGapAt), st.MaxScanTime.Round(time.Millisecond), st.LateScans, 2*sampleEvery, st.Polls, st.PollsOK, round(st.MaxPollGap),
		st.DoubledSamples, st.MostDoubled, st.PublishedTwice)
	if len(c.unexpected) > 0 {
		fmt.Fprintf(&b, "unexpected exits: %s\n", strings.Join(c.unexpected, "; "))
	}
	b.WriteString("operations:\n")
	for _, op := range c.ops {
		fmt.Fprintf(&b, "  %s %s; %d overlaps\n", c.sinceStart(op.Start), op.summary(), len(byOp[op]))
	}
	overlaps := slices.Clone(res.Overlaps)
	slices.SortFunc(overlaps, func(a, b *overlap) int { return int(b.duration() - a.duration()) })
	if len(overlaps) > 0 {
		const most = 15
		fmt.Fprintf(&b, "longest overlaps (%d of %d):\n", min(most, len(overlaps)), len(overlaps))
		for _, o := range overlaps[:min(most, len(overlaps))] {
			fmt.Fprintf(&b, "  %s during %s: %s\n", c.sinceStart(o.Start), c.opAt(o.Start), o.describe())
		}
	}
	return b.String()
}

func (s *kindStats) add(op *opRecord, overlaps []*overlap) {
	s.ran++
	if len(overlaps) > 0 {
		s.withOverlaps++
	}
	doubled := map[string]bool{}
	for _, o := range overlaps {
		doubled[o.Instance] = true
		s.longest = max(s.longest, o.duration())
	}
	s.doubled += len(doubled)
	if op.RecoveredOK {
		s.back = append(s.back, op.Recovered)
	} else {
		s.unrecovered++
	}
	if op.AvailOK {
		s.serving = append(s.serving, op.Avail)
	}
	s.worstNotOK = max(s.worstNotOK, op.Disrupted)
	s.relapses += op.Relapses
	if isSecond(op.Kind) {
		if !op.SecondRunning && op.SecondErr != "exit 0" {
			s.refused++
		}
		s.childrenDied += op.ChildrenDied
	}
}

// overlapsByOp files each overlap under the operation it began in.
func (c *cluster) overlapsByOp(all []*overlap) map[*opRecord][]*overlap {
	out := map[*opRecord][]*overlap{}
	for _, o := range all {
		var in *opRecord
		for _, op := range c.ops {
			if !op.Start.IsZero() && !o.Start.Before(op.Start) {
				in = op
			}
		}
		out[in] = append(out[in], o)
	}
	return out
}

func worstMedian(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return round(s[len(s)-1]) + " / " + round(s[(len(s)-1)/2])
}

func round(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }

func missingList(ms []*missing) string {
	if len(ms) == 0 {
		return ""
	}
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%s for %s", m.Instance, round(m.End.Sub(m.Start))))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
