package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// result is what one run measured; a run that timed out fills what it got.
type result struct {
	opts                  options
	commit                string
	started               time.Time
	loadBefore, loadAfter string
	fdLimit               uint64
	workers               int
	lmCPUs, simCPUs       []int

	complete                    bool
	placed                      int           // burst needs published
	placedTotal                 int           // and single needs
	elapsed                     time.Duration // first request → last burst need up (or the timeout)
	addTook                     time.Duration // first request → last batch accepted
	burstLat                    []time.Duration
	singleLat                   []time.Duration
	singlesAdded, singlesFailed int

	// CPU times over cpuWindow, from the first request until the burst
	// was published (or the timeout).
	lmCPU, simCPU, steal time.Duration
	// lmWait is the LAN manager's time on a run queue, waiting for a CPU
	// that other processes held.
	lmWait    time.Duration
	cpuWindow time.Duration
	lmMem     memory
	lmPeakFDs int

	restarts int      // watch streams the LAN manager ended
	lost     []string // master links that ended unasked
	stats    []string // the workers' counts
	failover *failover
	notes    []string
}

// failover is the kill of one master and the move of its services.
type failover struct {
	machine     string
	services    int
	moved       int
	took, bound time.Duration
	done        bool
}

// percentile is the nearest-rank q-quantile of sorted ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func p50p99(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none published"
	}
	return fmt.Sprintf("%s / %s (max %s, n=%d)", ms(percentile(ds, 0.5)), ms(percentile(ds, 0.99)), ms(ds[len(ds)-1]), len(ds))
}

// counts sums the workers' "key=value" counts.
func (r *result) counts() map[string]int64 {
	sum := map[string]int64{}
	for _, s := range r.stats {
		for _, kv := range strings.Fields(s) {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			sum[k] += n
		}
	}
	return sum
}

// rows are the result as metric/value pairs.
func (r *result) rows() [][2]string {
	o := r.opts
	pct := func(d time.Duration) string {
		if r.cpuWindow <= 0 {
			return "?"
		}
		return fmt.Sprintf("%.0f%%", 100*d.Seconds()/r.cpuWindow.Seconds())
	}
	rate := 0.0
	if r.elapsed > 0 {
		rate = float64(r.placed) / r.elapsed.Seconds()
	}
	done := fmt.Sprintf("all %d published after %s", o.needs, ms(r.elapsed))
	if !r.complete {
		done = fmt.Sprintf("%d of %d published when it stopped, after %s", r.placed, o.needs, ms(r.elapsed))
	}
	perPlacement := func(cpu time.Duration) string {
		if r.placedTotal == 0 {
			return "?"
		}
		return fmt.Sprintf("%.0f µs", float64(cpu/time.Duration(r.placedTotal))/float64(time.Microsecond))
	}
	link := "TLS (wss): each master joined with a join token and links with its certificate"
	if o.insecure {
		link = "plain WebSockets with the LAN manager's token (-insecure)"
	}
	c := r.counts()
	rows := [][2]string{
		{"masters × needs (batch)", fmt.Sprintf("%d × %d (%d per request), maxprocesses %d, %d worker processes", o.masters, o.needs, o.batch, o.maxProcs, r.workers)},
		{"LAN link", link},
		{"needs", done},
		{"placements/s", fmt.Sprintf("%.0f", rate)},
		{"all batches accepted after", ms(r.addTook)},
		{"batch need → published p50 / p99", p50p99(r.burstLat)},
		{fmt.Sprintf("single need (%.0f/s meanwhile) → published p50 / p99", o.singleRate), p50p99(r.singleLat) + fmt.Sprintf(", %d added, %d failed", r.singlesAdded, r.singlesFailed)},
		{"LAN manager CPU per placement", fmt.Sprintf("%s (%s of its CPU)", perPlacement(r.lmCPU), pct(r.lmCPU))},
		{"LAN manager threads waiting for its CPU (run queue, its own threads included)", pct(r.lmWait) + " of the time"},
		{"LAN manager peak RSS (VmHWM) / RSS at the end", fmt.Sprintf("%.0f / %.0f MiB", float64(r.lmMem.peakKB)/1024, float64(r.lmMem.nowKB)/1024)},
		{"LAN manager peak descriptors (limit)", fmt.Sprintf("%d (%d)", r.lmPeakFDs, r.fdLimit)},
		{"masters' CPU (simulation, CPUs " + formatCPUs(r.simCPUs) + ")", pct(r.simCPU) + " of one CPU, " + perPlacement(r.simCPU) + " per placement"},
		{"grants / declines per placement", fmt.Sprintf("%s / %s", per(c["grants"], r.placedTotal), per(c["declines"], r.placedTotal))},
	}
	if f := r.failover; f != nil {
		v := fmt.Sprintf("%d services of %s elsewhere after %s (bound %s)", f.services, f.machine, ms(f.took), ms(f.bound))
		if !f.done {
			v = fmt.Sprintf("%d of %d services of %s elsewhere when it stopped", f.moved, f.services, f.machine)
		}
		rows = append(rows, [2]string{"master killed → its services published elsewhere", v})
	}
	rows = append(rows,
		[2]string{"load average before / after", r.loadBefore + " / " + r.loadAfter},
		[2]string{"hypervisor steal during the burst", ms(r.steal)},
		[2]string{"LAN manager on CPU (nice)", fmt.Sprintf("%s (%d)", formatCPUs(r.lmCPUs), r.opts.nice)},
	)
	if n := c["errors"] + c["listenerrors"] + c["queuefull"] + int64(len(r.lost)) + int64(r.restarts); n > 0 {
		rows = append(rows, [2]string{"trouble", fmt.Sprintf("%d error frames, %d listen errors, %d frames dropped on a full queue, %d links lost, %d watch streams cut",
			c["errors"], c["listenerrors"], c["queuefull"], len(r.lost), r.restarts)})
	}
	return rows
}

func per(n int64, placed int) string {
	if placed == 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", float64(n)/float64(placed))
}

func (r *result) title() string {
	return fmt.Sprintf("allex scale bench, %s UTC, %s", r.started.UTC().Format("2006-01-02 15:04"), r.commit)
}

// print writes the result as aligned text.
func (r *result) print(w io.Writer) {
	fmt.Fprintln(w, r.title())
	for _, row := range r.rows() {
		fmt.Fprintf(w, "  %-58s %s\n", row[0], row[1])
	}
	for _, n := range append(r.notes, r.lost...) {
		fmt.Fprintln(w, "  note:", n)
	}
}

// markdown is the result as a Markdown table.
func (r *result) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n| metric | value |\n|---|---|\n", r.title())
	for _, row := range r.rows() {
		fmt.Fprintf(&b, "| %s | %s |\n", row[0], row[1])
	}
	for _, n := range r.notes {
		fmt.Fprintf(&b, "\nNote: %s\n", n)
	}
	return b.String()
}
