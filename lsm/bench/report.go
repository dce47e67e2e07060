package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func fmtLat(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%dus", d/time.Microsecond)
}

func fmtAmp(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.2f", x)
}

// formatResult is the per-result line printed as soon as a workload ends.
func formatResult(r *Result) string {
	if r.Err != nil {
		return fmt.Sprintf("result engine=%s workload=%s ERROR: %v", r.Engine, r.Workload, r.Err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "result engine=%s workload=%s ops=%d time=%.1fs ops/s=%.1f MB/s=%.2f p50=%s p99=%s p99.9=%s",
		r.Engine, r.Workload, r.Ops, r.Elapsed.Seconds(), r.OpsPerSec(), r.MBPerSec(),
		fmtLat(r.quantile(50)), fmtLat(r.quantile(99)), fmtLat(r.quantile(99.9)))
	if isFill(r.Workload) {
		wf, wt := r.WriteAmp()
		fmt.Fprintf(&b, " wamp(fill)=%s wamp(fill+settle)=%s wamp-source=%s dev-bytes=%s",
			fmtAmp(wf), fmtAmp(wt), r.IOSource, fmtBytes(r.DevBytesTotal))
	} else {
		fmt.Fprintf(&b, " keys=%d", r.Keys)
	}
	fmt.Fprintf(&b, " disk=%s disk-apparent=%s settle=%.1fs", fmtBytes(r.DiskBytes), fmtBytes(r.DiskApparent), r.SettleTime.Seconds())
	if r.Failures > 0 {
		fmt.Fprintf(&b, " WRONG-ANSWERS=%d", r.Failures)
	}
	return b.String()
}

// Ratio is tierkv's ops/s over another engine's ops/s on one workload.
type Ratio struct {
	Workload string
	Against  string // "pebble" or "best"
	Best     string // for "best": which peer was fastest
	Value    float64
}

// Ratios computes, for each workload, tierkv/pebble and tierkv/best-peer
// ops/s ratios. A failed tierkv run counts as 0 ops/s; a ratio whose
// denominator is missing (engine not selected or failed) is left out.
func Ratios(workloads []string, results []*Result) (out []Ratio, notes []string) {
	byKey := map[string]*Result{}
	for _, r := range results {
		byKey[r.Engine+"\x00"+r.Workload] = r
	}
	for _, w := range workloads {
		t := byKey["tierkv\x00"+w]
		if t == nil {
			continue
		}
		tv := t.OpsPerSec()
		if p := byKey["pebble\x00"+w]; p != nil && p.OpsPerSec() > 0 {
			out = append(out, Ratio{Workload: w, Against: "pebble", Best: "pebble", Value: tv / p.OpsPerSec()})
		} else {
			notes = append(notes, fmt.Sprintf("no tierkv/pebble ratio for %s: pebble not run or failed", w))
		}
		var best *Result
		for _, r := range results {
			if r.Workload != w || r.Engine == "tierkv" || r.OpsPerSec() <= 0 {
				continue
			}
			if best == nil || r.OpsPerSec() > best.OpsPerSec() {
				best = r
			}
		}
		if best != nil {
			out = append(out, Ratio{Workload: w, Against: "best", Best: best.Engine, Value: tv / best.OpsPerSec()})
		} else {
			notes = append(notes, fmt.Sprintf("no tierkv/best ratio for %s: no peer succeeded", w))
		}
	}
	return out, notes
}

// printRatios prints, per workload, exactly
//
//	ratio <workload> tierkv/pebble = <x.xx>
//	ratio <workload> tierkv/best = <x.xx>
func printRatios(out, errw io.Writer, cfg Config, results []*Result) {
	hasTierkv := false
	for _, e := range cfg.Engines {
		if e == "tierkv" {
			hasTierkv = true
		}
	}
	if !hasTierkv {
		fmt.Fprintln(errw, "note: tierkv not among the engines run; no ratio lines")
		return
	}
	ratios, notes := Ratios(cfg.Workloads, results)
	for _, n := range notes {
		fmt.Fprintln(errw, "note: "+n)
	}
	for _, r := range ratios {
		fmt.Fprintf(out, "ratio %s tierkv/%s = %.2f\n", r.Workload, r.Against, r.Value)
	}
	// Which peer was "best" per workload, as a comment line.
	var bests []string
	for _, r := range ratios {
		if r.Against == "best" {
			bests = append(bests, r.Workload+"="+r.Best)
		}
	}
	if len(bests) > 0 {
		fmt.Fprintf(out, "# best peer: %s\n", strings.Join(bests, " "))
	}
}

// printTable prints a markdown summary table.
func printTable(out io.Writer, results []*Result) {
	fmt.Fprintln(out, "| engine | workload | ops | ops/s | MB/s | p50 | p99 | p99.9 | wamp fill | wamp fill+settle | disk | settle |")
	fmt.Fprintln(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(out, "| %s | %s | ERROR: %s | | | | | | | | | |\n", r.Engine, r.Workload, strings.ReplaceAll(r.Err.Error(), "|", "/"))
			continue
		}
		wf, wt := r.WriteAmp()
		ops := fmt.Sprintf("%d", r.Ops)
		if r.Failures > 0 {
			ops += fmt.Sprintf(" (%d WRONG)", r.Failures)
		}
		fmt.Fprintf(out, "| %s | %s | %s | %.0f | %.1f | %s | %s | %s | %s | %s | %s | %.1fs |\n",
			r.Engine, r.Workload, ops, r.OpsPerSec(), r.MBPerSec(),
			fmtLat(r.quantile(50)), fmtLat(r.quantile(99)), fmtLat(r.quantile(99.9)),
			fmtAmp(wf), fmtAmp(wt), fmtBytes(r.DiskBytes), r.SettleTime.Seconds())
	}
}
