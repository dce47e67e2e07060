package node

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus metrics, registered on its own
// registry (no globals).
type metrics struct {
	latency  *prometheus.HistogramVec
	requests *prometheus.CounterVec
	repairs  *prometheus.CounterVec
	inflight prometheus.Gauge
	rejected prometheus.Counter
}

func newMetrics(n *Node) *metrics {
	m := &metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tierkv_request_duration_seconds",
			Help:    "Latency of coordinated client requests by operation (read, write) and consistency level.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"op", "consistency"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tierkv_requests_total",
			Help: "Coordinated client requests by operation, consistency level and result code.",
		}, []string{"op", "consistency", "code"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tierkv_read_repairs_total",
			Help: "Replicas repaired by reads, blocking (QUORUM, ALL) or in the background.",
		}, []string{"mode"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tierkv_requests_in_flight",
			Help: "Client requests being served.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tierkv_requests_rejected_total",
			Help: "Client requests refused because max_in_flight was reached.",
		}),
	}
	m.repairs.WithLabelValues("blocking")
	m.repairs.WithLabelValues("background")
	n.reg.MustRegister(m.latency, m.requests, m.repairs, m.inflight, m.rejected,
		&nodeCollector{n: n},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(op string, c Consistency, d time.Duration, err error) {
	code := "OK"
	if err != nil {
		code = grpcCode(err).String()
		if errors.Is(err, ErrNotFound) {
			code = "NotFound"
		}
	}
	m.requests.WithLabelValues(op, c.String(), code).Inc()
	m.latency.WithLabelValues(op, c.String()).Observe(d.Seconds())
}

// nodeCollector reads the engine's, hint store's and gossip's metrics at
// scrape time.
type nodeCollector struct{ n *Node }

var (
	descHintsPending   = prometheus.NewDesc("tierkv_hints_pending", "Hints stored and not yet delivered.", nil, nil)
	descHintsBytes     = prometheus.NewDesc("tierkv_hints_pending_bytes", "Bytes of pending hints (bounded by hint_max_bytes).", nil, nil)
	descHintsDelivered = prometheus.NewDesc("tierkv_hints_delivered_total", "Hints delivered to their replica.", nil, nil)
	descHintsDropped   = prometheus.NewDesc("tierkv_hints_dropped_total", "Hints dropped: over hint_max_bytes or older than hint_window.", nil, nil)
	descBacklog        = prometheus.NewDesc("tierkv_compaction_backlog_bytes", "Estimated bytes compactions must rewrite to catch up.", nil, nil)
	descDisk           = prometheus.NewDesc("tierkv_disk_usage_bytes", "Bytes of tables and blob files by tier (local, remote).", []string{"tier"}, nil)
	descStalls         = prometheus.NewDesc("tierkv_write_stalls_total", "Writes that waited for flushes or compactions.", nil, nil)
	descPhi            = prometheus.NewDesc("tierkv_gossip_phi", "Phi accrual suspicion of each peer (Down above 8).", []string{"peer"}, nil)
	descDown           = prometheus.NewDesc("tierkv_gossip_members_down", "Members the failure detector considers down.", nil, nil)
	descMembers        = prometheus.NewDesc("tierkv_gossip_members", "Members by gossiped state.", []string{"state"}, nil)
	descConvergence    = prometheus.NewDesc("tierkv_gossip_convergence_seconds", "Delay of state changes reaching this member (gossip convergence): last, max, mean.", []string{"stat"}, nil)
)

// Describe is part of the prometheus.Collector interface.
func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHintsPending, descHintsBytes, descHintsDelivered, descHintsDropped,
		descBacklog, descDisk, descStalls, descPhi, descDown, descMembers, descConvergence} {
		ch <- d
	}
}

// Collect is part of the prometheus.Collector interface.
func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	h := n.hints
	ch <- prometheus.MustNewConstMetric(descHintsPending, prometheus.GaugeValue, float64(h.pending.Load()))
	ch <- prometheus.MustNewConstMetric(descHintsBytes, prometheus.GaugeValue, float64(h.bytes.Load()))
	ch <- prometheus.MustNewConstMetric(descHintsDelivered, prometheus.CounterValue, float64(h.delivered.Load()))
	ch <- prometheus.MustNewConstMetric(descHintsDropped, prometheus.CounterValue, float64(h.dropped.Load()))
	em := n.db.Metrics()
	ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(em.CompactionBacklog))
	local := em.BlobBytes
	for _, l := range em.Levels {
		local += l.Size
	}
	ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, float64(local), "local")
	// TODO(node): remote bytes come from tiering once it is wired.
	ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, 0, "remote")
	ch <- prometheus.MustNewConstMetric(descStalls, prometheus.CounterValue, float64(em.WriteStalls))
	gm := n.g.Metrics()
	for peer, phi := range gm.Phi {
		ch <- prometheus.MustNewConstMetric(descPhi, prometheus.GaugeValue, phi, string(peer))
	}
	ch <- prometheus.MustNewConstMetric(descDown, prometheus.GaugeValue, float64(gm.Down))
	for s, k := range gm.MembersByState {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(k), s.String())
	}
	p := gm.Propagation
	ch <- prometheus.MustNewConstMetric(descConvergence, prometheus.GaugeValue, p.Last.Seconds(), "last")
	ch <- prometheus.MustNewConstMetric(descConvergence, prometheus.GaugeValue, p.Max.Seconds(), "max")
	ch <- prometheus.MustNewConstMetric(descConvergence, prometheus.GaugeValue, p.Mean.Seconds(), "mean")
}
