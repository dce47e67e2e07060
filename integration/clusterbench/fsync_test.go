package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// member serves a histogram in the Prometheus text format, as a tierkv
// node or an etcd member does.
func member(t *testing.T, metric string, counts map[string]int, count int) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# HELP %s fsyncs\n# TYPE %s histogram\n", metric, metric)
		for _, le := range []string{"0.001", "0.002", "0.004", "0.008"} {
			fmt.Fprintf(w, "%s_bucket{le=%q} %d\n", metric, le, counts[le])
		}
		fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum 1\n%s_count %d\n", metric, count, metric, metric, count)
		fmt.Fprintf(w, "# TYPE other counter\nother 7\n")
	}))
	t.Cleanup(s.Close)
	return s
}

func TestWALMetricsScrapeSumsMembers(t *testing.T) {
	const metric = "etcd_disk_wal_fsync_duration_seconds"
	a := member(t, metric, map[string]int{"0.001": 50, "0.002": 90, "0.004": 100, "0.008": 100}, 100)
	b := member(t, metric, map[string]int{"0.001": 0, "0.002": 0, "0.004": 0, "0.008": 100}, 100)
	w := newWALMetrics([]string{a.URL, strings.TrimPrefix(b.URL, "http://")}, metric)
	got := w.scrape(context.Background())
	want := buckets{0.001: 50, 0.002: 90, 0.004: 100, 0.008: 200, math.Inf(1): 200}
	if len(got) != len(want) {
		t.Fatalf("scrape = %v, want %v", got, want)
	}
	for le, n := range want {
		if got[le] != n {
			t.Fatalf("scrape = %v, want %v", got, want)
		}
	}
	// Half of the 200 fsyncs took 4-8 ms (the second member's): the
	// median is the bound below them, p99 most of the way up.
	if p, _ := got.quantile(0.5); p.Round(time.Microsecond) != 4*time.Millisecond {
		t.Errorf("p50 = %v, want 4ms", p)
	}
	if p, _ := got.quantile(0.99); p.Round(time.Microsecond) != 7920*time.Microsecond {
		t.Errorf("p99 = %v, want 7.92ms", p)
	}

	missing := newWALMetrics([]string{a.URL}, "tierkv_wal_sync_duration_seconds")
	if got := missing.scrape(context.Background()); got != nil {
		t.Errorf("scrape of a metric the member lacks = %v, want nil (n/a)", got)
	}
	if s := got.sub(nil).p99String(); s != "n/a" {
		t.Errorf("p99 without a first scrape = %q, want n/a", s)
	}
}

func TestBucketsQuantile(t *testing.T) {
	// Between two scrapes: 10 fsyncs under 1 ms, 89 more under 2 ms and
	// one beyond the last bound.
	before := buckets{0.001: 5, 0.002: 5, math.Inf(1): 5}
	after := buckets{0.001: 15, 0.002: 104, math.Inf(1): 105}
	d := after.sub(before)
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{
		{0.05, 500 * time.Microsecond}, // half-way through the first bucket
		{0.5, 1449438 * time.Nanosecond},
		{0.999, 2 * time.Millisecond}, // in +Inf: the highest finite bound
	} {
		if got, ok := d.quantile(c.q); !ok || got.Round(time.Microsecond) != c.want.Round(time.Microsecond) {
			t.Errorf("quantile(%v) = %v, %v; want %v", c.q, got, ok, c.want)
		}
	}
	if _, ok := before.sub(before).quantile(0.99); ok {
		t.Error("quantile of no observations: ok, want not ok")
	}
	sum := d.add(d)
	if sum[0.002] != 198 || sum[math.Inf(1)] != 200 {
		t.Errorf("add = %v", sum)
	}
}
