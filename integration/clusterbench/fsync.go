package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// walMetrics scrapes a system's own WAL fsync histogram from its members'
// Prometheus endpoints: tierkv_wal_sync_duration_seconds and etcd's
// etcd_disk_wal_fsync_duration_seconds, both one observation per
// fdatasync of a group commit. With the disk figures below it says how
// much of a put's latency the fsyncs were, and whether the device or the
// machine around it made them slow.
type walMetrics struct {
	urls   []string // …/metrics of every member
	metric string
	client *http.Client
}

func newWALMetrics(endpoints []string, metric string) *walMetrics {
	w := &walMetrics{metric: metric, client: &http.Client{Timeout: 5 * time.Second}}
	for _, e := range endpoints {
		w.urls = append(w.urls, "http://"+strings.TrimPrefix(e, "http://")+"/metrics")
	}
	return w
}

// buckets is a cumulative histogram: upper bound (seconds) → observations
// at or below it, summed over the members.
type buckets map[float64]float64

// scrape returns the histogram summed over the members, or nil if any
// member could not be read (the column then says n/a).
func (w *walMetrics) scrape(ctx context.Context) buckets {
	if w == nil {
		return nil
	}
	sum := buckets{}
	for _, u := range w.urls {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		b, err := w.scrapeOne(ctx, u)
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "clusterbench: %s: %v\n", u, err)
			return nil
		}
		for le, n := range b {
			sum[le] += n
		}
	}
	return sum
}

func (w *walMetrics) scrapeOne(ctx context.Context, url string) (buckets, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	fam, ok := fams[w.metric]
	if !ok {
		return nil, fmt.Errorf("no metric %s", w.metric)
	}
	b := buckets{}
	for _, m := range fam.GetMetric() {
		h := m.GetHistogram()
		for _, bk := range h.GetBucket() {
			if le := bk.GetUpperBound(); !math.IsInf(le, 1) { // +Inf is the count, below
				b[le] += float64(bk.GetCumulativeCount())
			}
		}
		b[math.Inf(1)] += float64(h.GetSampleCount())
	}
	return b, nil
}

// sub returns the observations of b that came after a.
func (b buckets) sub(a buckets) buckets {
	if b == nil || a == nil {
		return nil
	}
	d := buckets{}
	for le, n := range b {
		d[le] = n - a[le]
	}
	return d
}

func (b buckets) add(c buckets) buckets {
	if b == nil || c == nil {
		return nil
	}
	s := buckets{}
	for le, n := range b {
		s[le] = n + c[le]
	}
	return s
}

// quantile estimates the q-quantile as Prometheus' histogram_quantile
// does: linear within the bucket that holds it. ok is false without
// observations; a quantile in the +Inf bucket is the highest finite bound.
func (b buckets) quantile(q float64) (_ time.Duration, ok bool) {
	les := make([]float64, 0, len(b))
	for le := range b {
		les = append(les, le)
	}
	slices.Sort(les)
	if b[math.Inf(1)] == 0 {
		return 0, false
	}
	rank := q * b[math.Inf(1)]
	lo, below := 0.0, 0.0
	for _, le := range les {
		n := b[le]
		if n >= rank {
			if math.IsInf(le, 1) {
				return seconds(lo), true
			}
			frac := 0.0
			if n > below {
				frac = (rank - below) / (n - below)
			}
			return seconds(lo + (le-lo)*frac), true
		}
		lo, below = le, n
	}
	return seconds(lo), true
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// p99String is the p99 of a workload's WAL fsyncs, or "n/a".
func (b buckets) p99String() string {
	d, ok := b.quantile(0.99)
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.1fms", ms(d))
}
