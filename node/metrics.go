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
	// sessionCalls counts the client calls received on KV.Session streams.
	sessionCalls prometheus.Counter
	// writeMessages and remoteWrites count the messages (stream requests
	// or unary calls) and the writes sent to remote replicas; streamResets
	// the write streams that broke. streamApplies and streamApplied count,
	// on the replica, the engine batches applied from write streams and
	// the writes in them.
	writeMessages, remoteWrites  prometheus.Counter
	streamResets                 prometheus.Counter
	streamApplies, streamApplied prometheus.Counter
	// dataReads and digestReads count the replica reads coordinators send
	// (of tierkv_replica_reads_total); digestMismatches the reads whose
	// newest version came in a digest; speculativeReads the replicas asked
	// because another was slow.
	dataReads, digestReads prometheus.Counter
	// readMessages counts the messages carrying reads to remote replicas;
	// readStreamResets the read streams that broke.
	readMessages, readStreamResets prometheus.Counter
	digestMismatches               prometheus.Counter
	speculativeReads               prometheus.Counter
	// messageTimeouts counts the stream messages, by kind (write, read),
	// unanswered within replica_timeout.
	messageTimeouts *prometheus.CounterVec
}

// newWALSyncHistogram is the engine's WAL sync latency (etcd's
// etcd_disk_wal_fsync_duration_seconds). The node makes it first: the
// engine opens before the other metrics exist (a replacement opens it
// after).
func newWALSyncHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tierkv_wal_sync_duration_seconds",
		Help:    "Latency of the engine's write-ahead log syncs (fdatasync), one per group commit; every acknowledged write waits for one.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
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
		sessionCalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tierkv_session_calls_total",
			Help: "Client calls received on KV.Session streams (each also counts in tierkv_requests_total).",
		}),
	}
	m.writeMessages = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tierkv_replica_write_messages_total",
		Help: "Messages carrying writes to remote replicas (write stream requests, or unary calls with tracing on); writes_total / messages_total is the coordinator's batching.",
	})
	m.remoteWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tierkv_replica_writes_total",
		Help: "Writes this node, as coordinator, sent to remote replicas.",
	})
	m.streamResets = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tierkv_replica_write_stream_resets_total",
		Help: "Write streams to remote replicas that broke (error, replica gone, or no answer within replica_timeout); their pending writes were hinted.",
	})
	m.streamApplies = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tierkv_replica_stream_applies_total",
		Help: "Engine batches this node, as replica, applied from coordinators' write streams.",
	})
	m.streamApplied = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tierkv_replica_stream_applied_writes_total",
		Help: "Writes in those batches; applied_writes_total / applies_total is the replica's batching.",
	})
	m.readMessages = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tierkv_replica_read_messages_total",
		Help: "Messages carrying reads to remote replicas (read stream requests, or unary calls with tracing on); compared with tierkv_replica_reads_total it is the coordinator's batching.",
	})
	m.readStreamResets = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tierkv_replica_read_stream_resets_total",
		Help: "Read streams to remote replicas that broke (error, replica gone, or no answer within replica_timeout); their pending reads failed over to other replicas.",
	})
	m.messageTimeouts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tierkv_replica_message_timeouts_total",
		Help: "Write and read stream messages to remote replicas unanswered within replica_timeout; their requests failed over (writes: hinted). One on a stream that answered nothing else meanwhile also resets the stream.",
	}, []string{"kind"})
	m.messageTimeouts.WithLabelValues("write")
	m.messageTimeouts.WithLabelValues("read")
	n.reg.MustRegister(m.writeMessages, m.remoteWrites, m.streamResets, m.streamApplies, m.streamApplied,
		m.readMessages, m.readStreamResets, m.messageTimeouts)
	replicaReads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tierkv_replica_reads_total",
		Help: "Replica reads sent by this coordinator (this node's own included): data (the value) or digest (the version alone).",
	}, []string{"kind"})
	m.dataReads = replicaReads.WithLabelValues("data")
	m.digestReads = replicaReads.WithLabelValues("digest")
	m.digestMismatches = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tierkv_read_digest_mismatches_total",
		Help: "Reads whose newest version came in a digest, so that its value was read in a second round trip.",
	})
	m.speculativeReads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tierkv_read_speculative_retries_total",
		Help: "Replicas asked because an earlier one had not answered within speculative_retry.",
	})
	n.reg.MustRegister(replicaReads, m.digestMismatches, m.speculativeReads)
	n.reg.MustRegister(n.walSync)
	m.repairs.WithLabelValues("blocking")
	m.repairs.WithLabelValues("background")
	n.reg.MustRegister(m.latency, m.requests, m.repairs, m.inflight, m.rejected, m.sessionCalls,
		&nodeCollector{n: n},
		// NB: the scheduler's metrics include go_sched_latencies_seconds, the
		// time goroutines wait runnable for a CPU: on a busy node, the part
		// of request latency that no span shows.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
	descDisk           = prometheus.NewDesc("tierkv_disk_usage_bytes", "Bytes of tables and blob files by tier: local (a local copy) or remote (only in the object store).", []string{"tier"}, nil)
	descObjects        = prometheus.NewDesc("tierkv_tiering_objects", "Tables and blob files by tier: local (a local copy) or remote (only in the object store).", []string{"tier"}, nil)
	descUpBytes        = prometheus.NewDesc("tierkv_tiering_upload_bytes_total", "Bytes uploaded to the object store (verified).", nil, nil)
	descUploads        = prometheus.NewDesc("tierkv_tiering_uploads_total", "Objects uploaded to the object store (verified).", nil, nil)
	descUpFailures     = prometheus.NewDesc("tierkv_tiering_upload_failures_total", "Failed object uploads (retried by the next pass).", nil, nil)
	descUpPending      = prometheus.NewDesc("tierkv_tiering_uploads_pending", "Cold objects of the last upload pass not uploaded yet.", nil, nil)
	descFbUpBytes      = prometheus.NewDesc("tierkv_tiering_fallback_upload_bytes_total", "Bytes written to the fallback object store.", nil, nil)
	descDownBytes      = prometheus.NewDesc("tierkv_tiering_download_bytes_total", "Bytes of object data downloaded (both object stores).", nil, nil)
	descGets           = prometheus.NewDesc("tierkv_tiering_get_requests_total", "Ranged GET requests for object data.", nil, nil)
	descRemoteReads    = prometheus.NewDesc("tierkv_tiering_remote_reads_total", "Engine reads that needed object data from outside the kept metadata.", nil, nil)
	descCacheHits      = prometheus.NewDesc("tierkv_tiering_cache_hits_total", "Remote data chunks served by the local disk cache.", nil, nil)
	descCacheMisses    = prometheus.NewDesc("tierkv_tiering_cache_misses_total", "Remote data chunks not in the local disk cache (fetched).", nil, nil)
	descCacheSize      = prometheus.NewDesc("tierkv_tiering_cache_size_bytes", "Bytes held by the local disk cache of remote data.", nil, nil)
	descFbReads        = prometheus.NewDesc("tierkv_tiering_fallback_reads_total", "Reads sent to the fallback object store (primary failure or hedge).", nil, nil)
	descHedged         = prometheus.NewDesc("tierkv_tiering_hedged_reads_total", "Reads hedged to the fallback because the primary was slow.", nil, nil)
	descFbBytes        = prometheus.NewDesc("tierkv_tiering_fallback_read_bytes_total", "Bytes served by the fallback object store.", nil, nil)
	descBackups        = prometheus.NewDesc("tierkv_tiering_backups_total", "Manifest backups uploaded.", nil, nil)
	descBackupFailures = prometheus.NewDesc("tierkv_tiering_backup_failures_total", "Manifest backups that failed.", nil, nil)
	descGCDeleted      = prometheus.NewDesc("tierkv_tiering_gc_deleted_objects_total", "Unreferenced objects deleted from the object store.", nil, nil)
	descHydrated       = prometheus.NewDesc("tierkv_tiering_hydrated_bytes_total", "Bytes downloaded to local files by hydration.", nil, nil)
	descWALSyncs       = prometheus.NewDesc("tierkv_wal_syncs_total", "fdatasyncs of the write-ahead log; records_total / syncs_total is the mean group commit.", nil, nil)
	descWALRecords     = prometheus.NewDesc("tierkv_wal_records_total", "Records (engine batches) written to the write-ahead log.", nil, nil)
	descWALBytes       = prometheus.NewDesc("tierkv_wal_bytes_total", "Bytes written to the write-ahead log.", nil, nil)
	descStalls         = prometheus.NewDesc("tierkv_write_stalls_total", "Writes that waited for flushes or compactions.", nil, nil)
	descFlushes        = prometheus.NewDesc("tierkv_flushes_total", "Memtable flushes.", nil, nil)
	descCompactions    = prometheus.NewDesc("tierkv_compactions_total", "Compactions (including blob rewrites).", nil, nil)
	descCompactBytes   = prometheus.NewDesc("tierkv_compaction_written_bytes_total", "Bytes compactions wrote (tables and blob files).", nil, nil)
	descBlobRewrite    = prometheus.NewDesc("tierkv_blob_rewrite_bytes_total", "Value bytes compactions copied out of blob files that were mostly garbage.", nil, nil)
	descBlobRewriteLim = prometheus.NewDesc("tierkv_blob_rewrite_limit_bytes_per_second", "Current pacing limit on blob rewrites (0: unpaced, while L0 backs up or with pacing off).", nil, nil)
	descPhi            = prometheus.NewDesc("tierkv_gossip_phi", "Phi accrual suspicion of each peer (Down above 8).", []string{"peer"}, nil)
	descDown           = prometheus.NewDesc("tierkv_gossip_members_down", "Members the failure detector considers down.", nil, nil)
	descMembers        = prometheus.NewDesc("tierkv_gossip_members", "Members by gossiped state.", []string{"state"}, nil)
	descAEPasses       = prometheus.NewDesc("tierkv_antientropy_passes_total", "Finished anti-entropy passes (periodic and triggered).", nil, nil)
	descAEFailedPairs  = prometheus.NewDesc("tierkv_antientropy_failed_pairs_total", "(peer, range) pairs of anti-entropy passes that failed.", nil, nil)
	descAEPairs        = prometheus.NewDesc("tierkv_antientropy_pass_pairs", "(peer, range) pairs of the running or last pass: total and done (progress).", []string{"stat"}, nil)
	descAERunning      = prometheus.NewDesc("tierkv_antientropy_running", "1 while an anti-entropy pass runs.", nil, nil)
	descAEKeys         = prometheus.NewDesc("tierkv_antientropy_keys_total", "Keys anti-entropy copied, by direction: fetched from or pushed to a peer.", []string{"direction"}, nil)
	descAEBytes        = prometheus.NewDesc("tierkv_antientropy_bytes_total", "Bytes of keys and values anti-entropy copied, by direction.", []string{"direction"}, nil)
	descAERanges       = prometheus.NewDesc("tierkv_antientropy_ranges_total", "Ranges compared by anti-entropy, by result: in_sync, repaired (differed) or failed.", []string{"result"}, nil)
	descAELastEnd      = prometheus.NewDesc("tierkv_antientropy_last_pass_end_timestamp_seconds", "When the last anti-entropy pass ended (0: none yet).", nil, nil)
	descReplacePhase   = prometheus.NewDesc("tierkv_replace_phase", "1 for the current phase of a replacement started with --replace (restoring, catching_up, hydrating, done, failed).", []string{"phase"}, nil)
	descReplaceBytes   = prometheus.NewDesc("tierkv_replace_bytes", "Bytes a replacement got from the object store (metadata, remote reads, hydration) and from peers (catch-up).", []string{"source"}, nil)
	descReplaceSeconds = prometheus.NewDesc("tierkv_replace_milestone_seconds", "Seconds from a replacement's start to serving, to redundancy (caught up) and to hydration (0: not yet).", []string{"milestone"}, nil)
	descConvergence    = prometheus.NewDesc("tierkv_gossip_convergence_seconds", "Delay of state changes reaching this member (gossip convergence): last, max, mean.", []string{"stat"}, nil)
)

// Describe is part of the prometheus.Collector interface.
func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHintsPending, descHintsBytes, descHintsDelivered, descHintsDropped,
		descBacklog, descDisk, descStalls, descFlushes, descCompactions, descCompactBytes, descBlobRewrite, descBlobRewriteLim, descWALSyncs, descWALRecords, descWALBytes, descPhi, descDown, descMembers, descConvergence,
		descObjects, descUpBytes, descUploads, descUpFailures, descUpPending, descFbUpBytes, descDownBytes, descGets,
		descRemoteReads, descCacheHits, descCacheMisses, descCacheSize, descFbReads, descHedged, descFbBytes,
		descBackups, descBackupFailures, descGCDeleted, descHydrated,
		descReplacePhase, descReplaceBytes, descReplaceSeconds,
		descAEPasses, descAEFailedPairs, descAEPairs, descAERunning, descAEKeys, descAEBytes, descAERanges, descAELastEnd} {
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
	tm := n.tier.Metrics()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descDisk, float64(tm.LocalBytes), "local")
	gauge(descDisk, float64(tm.RemoteBytes), "remote")
	gauge(descObjects, float64(tm.LocalObjects), "local")
	gauge(descObjects, float64(tm.RemoteObjects), "remote")
	counter(descUpBytes, tm.BytesUploaded)
	counter(descUploads, tm.ObjectsUploaded)
	counter(descUpFailures, tm.UploadFailures)
	gauge(descUpPending, float64(tm.UploadsPending))
	counter(descFbUpBytes, tm.FallbackBytesUploaded)
	counter(descDownBytes, tm.BytesDownloaded)
	counter(descGets, tm.GetOps)
	counter(descRemoteReads, tm.RemoteReads)
	counter(descCacheHits, tm.CacheHits)
	counter(descCacheMisses, tm.CacheMisses)
	gauge(descCacheSize, float64(tm.CacheSize))
	counter(descFbReads, tm.FallbackReads)
	counter(descHedged, tm.HedgedReads)
	counter(descFbBytes, tm.FallbackBytes)
	counter(descBackups, tm.Backups)
	counter(descBackupFailures, tm.BackupFailures)
	counter(descGCDeleted, tm.GCDeleted)
	counter(descHydrated, tm.HydratedBytes)
	ch <- prometheus.MustNewConstMetric(descStalls, prometheus.CounterValue, float64(em.WriteStalls))
	counter(descFlushes, em.Flushes)
	counter(descCompactions, em.Compactions)
	counter(descCompactBytes, em.CompactionBytesOut)
	counter(descBlobRewrite, em.BlobRewriteBytes)
	gauge(descBlobRewriteLim, em.BlobRewriteLimit)
	ch <- prometheus.MustNewConstMetric(descWALSyncs, prometheus.CounterValue, float64(em.WALSyncs))
	ch <- prometheus.MustNewConstMetric(descWALRecords, prometheus.CounterValue, float64(em.WALRecords))
	ch <- prometheus.MustNewConstMetric(descWALBytes, prometheus.CounterValue, float64(em.WALBytes))
	am := n.aeSched.Metrics()
	counter(descAEPasses, am.Passes)
	counter(descAEFailedPairs, am.FailedPairs)
	gauge(descAEPairs, float64(am.PairsTotal), "total")
	gauge(descAEPairs, float64(am.PairsDone), "done")
	running := 0.0
	if am.Running {
		running = 1
	}
	gauge(descAERunning, running)
	labeled := func(d *prometheus.Desc, v float64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, label)
	}
	labeled(descAEKeys, float64(am.Totals.KeysFetched), "fetched")
	labeled(descAEKeys, float64(am.Totals.KeysPushed), "pushed")
	labeled(descAEBytes, float64(am.Totals.BytesFetched), "fetched")
	labeled(descAEBytes, float64(am.Totals.BytesPushed), "pushed")
	labeled(descAERanges, float64(am.Totals.RangesInSync), "in_sync")
	labeled(descAERanges, float64(am.Totals.Ranges-am.Totals.RangesInSync-am.Totals.RangesFailed), "repaired")
	labeled(descAERanges, float64(am.Totals.RangesFailed), "failed")
	lastEnd := 0.0
	if !am.LastPassEnd.IsZero() {
		lastEnd = float64(am.LastPassEnd.UnixNano()) / 1e9
	}
	gauge(descAELastEnd, lastEnd)
	if rs := n.ReplaceStatus(); rs != nil {
		for _, ph := range []string{phaseRestoring, phaseCatchingUp, phaseHydrating, phaseDone, phaseFailed} {
			v := 0.0
			if ph == rs.Phase {
				v = 1
			}
			gauge(descReplacePhase, v, ph)
		}
		gauge(descReplaceBytes, float64(rs.BytesFromBucket), "bucket")
		gauge(descReplaceBytes, float64(rs.BytesFromPeers), "peers")
		gauge(descReplaceSeconds, rs.SecondsToServing, "serving")
		gauge(descReplaceSeconds, rs.SecondsToRedundant, "redundant")
		gauge(descReplaceSeconds, rs.SecondsToHydrated, "hydrated")
	}
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
