//go:build linux

package main

import (
	"cmp"
	"errors"
	"fmt"
	"strings"

	"github.com/allex-go/allex/internal/procfs"
)

// The targets a run is checked against. On a noisy VM an absolute time
// says as much about the host's other guests as about a supervisor, so the
// gated targets are ratios of medians taken in the same run, where a slow
// minute slows both sides. Tails follow the hypervisor's steal more than
// any supervisor's work, so p99s are reported with the steal beside them,
// never gated; the ratios to the floor are goals for allex's own work, not
// comparisons with a peer, and are reported too.
const (
	peerLimit      = 0.20 // allex/peer, medians of the same run
	rssLimitMB     = 30.0 // the machine's supervisor, idle with rssChildren
	rssChildren    = 500
	floorStartGoal = 1.5 // allex/floor, start of the largest N
	floorKillGoal  = 1.2 // allex/floor, kill -9 → accepting p50
)

// gatedPeers are the peers allex is gated against, in the report's order.
var gatedPeers = []string{"pm2", "supervisord"}

type verdict int

const (
	notRun verdict = iota
	met
	missed
)

func (v verdict) String() string {
	switch v {
	case met:
		return "met"
	case missed:
		return "MISSED"
	}
	return "not run"
}

// gate is one gated target's outcome: value (a ratio, or MB for the RSS)
// at most limit. why says why it was not run.
type gate struct {
	name         string
	value, limit float64
	unit         string
	verdict      verdict
	why          string
}

// gates checks a run's results against the gated targets: for every N
// the published start, and the kill -9 → accepting p50, each allex/peer
// at most peerLimit against every gated peer; and the machine's
// supervisor memory (PSS) idle with rssChildren children. A target whose systems
// did not run, or did not measure it, is not run rather than missed.
func gates(o *options, results []*result) []gate {
	allex := find(results, "allex")
	var gs []gate
	for _, peer := range gatedPeers {
		p := find(results, peer)
		for _, n := range o.ns {
			name := fmt.Sprintf("(a) start N=%d, all published: allex/%s", n, peer)
			gs = append(gs, ratioGate(name, allex, p, peer, func(r *result) cell { return startMedian(r, n) }))
		}
		name := fmt.Sprintf("(b) kill -9 → accepting again, p50: allex/%s", peer)
		gs = append(gs, ratioGate(name, allex, p, peer, func(r *result) cell { return killPercentile(r, 50) }))
	}
	return append(gs, rssGate(allex))
}

func ratioGate(name string, allex, peer *result, peerName string, get func(*result) cell) gate {
	g := gate{name: name, limit: peerLimit}
	if g.why = cmp.Or(absent(allex, "allex"), absent(peer, peerName)); g.why != "" {
		return g
	}
	a, p := get(allex), get(peer)
	if !a.ok || !p.ok || p.v <= 0 {
		g.why = "not measured"
		return g
	}
	g.value = a.v / p.v
	return judge(g)
}

func rssGate(allex *result) gate {
	g := gate{name: fmt.Sprintf("(c) supervisor memory (PSS) idle with %d children (allex: master and keeper)", rssChildren), limit: rssLimitMB, unit: " MB"}
	if g.why = absent(allex, "allex"); g.why != "" {
		return g
	}
	u, ok := machineUsage(allex)
	switch {
	case !ok:
		g.why = "not measured"
	case allex.idleN < rssChildren:
		g.why = fmt.Sprintf("idle measured with %d children", allex.idleN)
	default:
		g.value = float64(u.PSSKB) / 1024
		return judge(g)
	}
	return g
}

func judge(g gate) gate {
	g.verdict = met
	if g.value > g.limit {
		g.verdict = missed
	}
	return g
}

// absent says why r has nothing to compare, or "".
func absent(r *result, name string) string {
	switch {
	case r == nil:
		return name + " not in this run"
	case r.unavailable != "":
		return name + " not available"
	case r.failed != nil:
		return name + " failed"
	}
	return ""
}

func find(results []*result, name string) *result {
	for _, r := range results {
		if r.name == name {
			return r
		}
	}
	return nil
}

// gatesMissed is the error a run ends with when a gated target was
// missed, listing them, or nil.
func gatesMissed(gs []gate) error {
	var miss []string
	for _, g := range gs {
		if g.verdict == missed {
			miss = append(miss, fmt.Sprintf("%s %s > %s", g.name, g.valueText(), g.limitText()))
		}
	}
	if len(miss) == 0 {
		return nil
	}
	return errors.New("gates missed: " + strings.Join(miss, "; "))
}

func (g gate) valueText() string {
	if g.unit != "" {
		return fmt.Sprintf("%.1f%s", g.value, g.unit)
	}
	// Three decimals: a miss by a hair must not print as the limit.
	return fmt.Sprintf("%.3f", g.value)
}

func (g gate) limitText() string {
	if g.unit != "" {
		return fmt.Sprintf("%.0f%s", g.limit, g.unit)
	}
	return fmt.Sprintf("%.2f", g.limit)
}

// gatesSection renders the gates and the reported targets for the
// report.
func gatesSection(o *options, results []*result) string {
	var b strings.Builder
	b.WriteString("\n## Gates\n\n")
	fmt.Fprintf(&b, "Gated: the bench exits 1 when one is missed. allex/peer of medians from this run, at most %.2f; the supervisor's memory (PSS) at most %.0f MB.\n\n", peerLimit, rssLimitMB)
	b.WriteString("| gate | value | limit | verdict |\n|---|---:|---:|---|\n")
	for _, g := range gates(o, results) {
		v, verdict := "–", g.verdict.String()
		if g.verdict != notRun {
			v = g.valueText()
		} else {
			verdict += ": " + g.why
		}
		fmt.Fprintf(&b, "| %s | %s | ≤ %s | %s |\n", g.name, v, g.limitText(), verdict)
	}
	b.WriteString("\nReported, not gated:\n\n")
	for _, l := range reported(o, results) {
		b.WriteString("- " + l + "\n")
	}
	return b.String()
}

// reported lists the targets that are never gated: allex against the
// floor, with its goals, and every system's kill p99 with the steal
// during its kill rounds.
func reported(o *options, results []*result) []string {
	allex, floor := find(results, "allex"), find(results, "floor")
	var out []string
	n := o.maxN()
	for _, f := range []struct {
		name string
		goal float64
		get  func(*result) cell
	}{
		{fmt.Sprintf("start N=%d, all published", n), floorStartGoal, func(r *result) cell { return startMedian(r, n) }},
		{"kill -9 → accepting again, p50", floorKillGoal, func(r *result) cell { return killPercentile(r, 50) }},
	} {
		line := fmt.Sprintf("allex/floor, %s: ", f.name)
		a, fl := cell{}, cell{}
		if cmp.Or(absent(allex, "allex"), absent(floor, "floor")) == "" {
			a, fl = f.get(allex), f.get(floor)
		}
		if a.ok && fl.ok && fl.v > 0 {
			line += fmt.Sprintf("%.2f (goal %.1f)", a.v/fl.v, f.goal)
		} else {
			line += fmt.Sprintf("– (goal %.1f; not run)", f.goal)
		}
		out = append(out, line)
	}
	var tails []string
	for _, r := range results {
		if absent(r, r.name) != "" || len(r.kills) == 0 {
			continue
		}
		tails = append(tails, fmt.Sprintf("%s %.1f ms (steal %s)", r.name, ms(percentile(r.kills, 99)), stealText(r)))
	}
	if len(tails) > 0 {
		out = append(out, fmt.Sprintf("kill -9 → accepting again, p99 of %d, with the CPU time the hypervisor took (steal) during that system's kill rounds: %s", o.kills, strings.Join(tails, ", ")))
	}
	return out
}

// stealText is the steal during r's kill rounds in ms, in total and per
// round. It is read in clock ticks, so a stall shorter than a tick can
// show as 0.
func stealText(r *result) string {
	if len(r.killSteal) == 0 {
		return "not read"
	}
	var total uint64
	parts := make([]string, len(r.killSteal))
	for i, t := range r.killSteal {
		total += t
		parts[i] = fmt.Sprintf("%.0f", float64(t)*1000/procfs.ClockTicks)
	}
	if len(parts) == 1 {
		return fmt.Sprintf("%.0f ms", float64(total)*1000/procfs.ClockTicks)
	}
	return fmt.Sprintf("%.0f ms: %s by round", float64(total)*1000/procfs.ClockTicks, strings.Join(parts, ", "))
}
