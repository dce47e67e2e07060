package lsm

import (
	"time"

	"golang.org/x/time/rate"

	"github.com/tierkv/tierkv/lsm/internal/manifest"
)

// LevelMetrics describes one level.
type LevelMetrics struct {
	NumFiles int
	Size     uint64
}

// Metrics is a point-in-time snapshot of the engine's counters. The node
// layer exports it to Prometheus.
type Metrics struct {
	Levels [manifest.NumLevels]LevelMetrics
	// MemTables counts the mutable and the sealed memtables; MemTableSize
	// is their total size in bytes.
	MemTables    int
	MemTableSize int64
	// CompactionBacklog estimates the bytes compactions must still rewrite
	// to bring every level within its target.
	CompactionBacklog uint64
	Compactions       uint64
	CompactionBytesIn uint64
	// CompactionBytesOut is what compactions wrote.
	CompactionBytesOut uint64
	TombstonesPurged   uint64
	Flushes            uint64
	FlushBytes         uint64
	// BlobFiles counts live blob files; BlobBytes is their size and
	// BlobLiveBytes the value bytes tables still reference (the rest is
	// garbage awaiting a rewrite).
	BlobFiles     int
	BlobBytes     uint64
	BlobLiveBytes uint64
	// UserBytes is the encoded size of all applied batches.
	UserBytes uint64
	// WriteAmp is (WAL + flush + compaction bytes written) / UserBytes.
	WriteAmp float64

	// WriteStalls counts writes that had to wait; WriteStallTime is the
	// total time they waited; WriteStallFailures counts those that gave
	// up with ErrWriteStall.
	WriteStalls        uint64
	WriteStallTime     time.Duration
	WriteStallFailures uint64

	// BloomChecks counts bloom probes of point reads; BloomNegatives the
	// probes that excluded the table; BloomFalsePositives the probes that
	// passed for a key the table did not hold.
	BloomChecks         uint64
	BloomNegatives      uint64
	BloomFalsePositives uint64
	// BlockCacheHits and BlockCacheMisses count block cache lookups;
	// BlockCacheSize is the bytes it holds.
	BlockCacheHits   uint64
	BlockCacheMisses uint64
	BlockCacheSize   int64

	// WALSyncs counts fdatasyncs of the WAL; WALRecords the records
	// (batches) written; WALBytes the bytes. WALRecords/WALSyncs is the
	// mean group-commit size.
	WALSyncs   uint64
	WALRecords uint64
	WALBytes   uint64

	// BlobRewriteBytes counts the value bytes compactions copied out of
	// blob files that were mostly garbage. BlobRewriteLimit is the pacing
	// limit on such copies now, in bytes per second (gcpace.go); 0 means
	// unpaced.
	BlobRewriteBytes uint64
	BlobRewriteLimit float64
}

// BlockCacheHitRatio returns hits / (hits + misses), or 0.
func (m *Metrics) BlockCacheHitRatio() float64 {
	if t := m.BlockCacheHits + m.BlockCacheMisses; t > 0 {
		return float64(m.BlockCacheHits) / float64(t)
	}
	return 0
}

// WALMeanGroupSize returns the mean number of records per WAL sync.
func (m *Metrics) WALMeanGroupSize() float64 {
	if m.WALSyncs == 0 {
		return 0
	}
	return float64(m.WALRecords) / float64(m.WALSyncs)
}

// Metrics returns a snapshot of the engine's metrics.
func (d *DB) Metrics() Metrics {
	var m Metrics
	d.mu.Lock()
	v := d.mu.current
	mems := append([]*memEntry{d.mu.mem}, d.mu.imm...)
	if v != nil {
		v.ref()
	}
	d.mu.Unlock()
	if v != nil {
		defer v.unref(d)
		for l := range v.v.Levels {
			m.Levels[l] = LevelMetrics{NumFiles: len(v.v.Levels[l]), Size: v.v.LevelSize(l)}
		}
		m.CompactionBacklog = d.compactionBacklog(v)
		m.BlobFiles = len(v.v.Blobs)
		for _, b := range v.v.Blobs {
			m.BlobBytes += b.Size
		}
		for _, n := range v.v.BlobLiveBytes() {
			m.BlobLiveBytes += n
		}
	}
	for _, me := range mems {
		m.MemTables++
		m.MemTableSize += me.mem.Size()
		st := me.wal.Stats()
		m.WALSyncs += st.Syncs
		m.WALRecords += st.Records
		m.WALBytes += st.BytesWritten
	}
	m.WALSyncs += d.m.walSyncs.Load()
	m.WALRecords += d.m.walRecords.Load()
	m.WALBytes += d.m.walBytes.Load()
	m.BlobRewriteBytes = d.m.blobRewritten.Load()
	if l := d.gc.limit(); l != rate.Inf {
		m.BlobRewriteLimit = float64(l)
	}
	m.Compactions = d.m.compactions.Load()
	m.CompactionBytesIn = d.m.compactBytesIn.Load()
	m.CompactionBytesOut = d.m.compactBytesOut.Load()
	m.TombstonesPurged = d.m.tombstonesPurge.Load()
	m.Flushes = d.m.flushes.Load()
	m.FlushBytes = d.m.flushBytes.Load()
	m.UserBytes = d.m.userBytes.Load()
	if m.UserBytes > 0 {
		m.WriteAmp = float64(m.WALBytes+m.FlushBytes+m.CompactionBytesOut) / float64(m.UserBytes)
	}
	m.WriteStalls = d.m.stalls.Load()
	m.WriteStallTime = time.Duration(d.m.stallNanos.Load())
	m.WriteStallFailures = d.m.stallFailures.Load()
	m.BloomChecks = d.tableStats.BloomChecks.Load()
	m.BloomNegatives = d.tableStats.BloomNegatives.Load()
	m.BloomFalsePositives = d.tableStats.BloomFalsePositives.Load()
	cs := d.cache.Stats()
	m.BlockCacheHits, m.BlockCacheMisses, m.BlockCacheSize = cs.Hits, cs.Misses, cs.Size
	return m
}

// compactionBacklog estimates bytes pending compaction: under leveled, the
// L0 bytes once L0 reaches its trigger plus each level's excess over its
// target (rewritten with the overlapping part of the next level, hence the
// multiplier); under size-tiered, the bytes of tables in buckets ready to
// merge.
func (d *DB) compactionBacklog(v *version) uint64 {
	if d.opts.CompactionStrategy == SizeTiered {
		if c := d.pickSizeTiered(v); c != nil {
			var s uint64
			for _, in := range c.inputs {
				s += in.t.meta.Size
			}
			return s
		}
		return 0
	}
	var backlog uint64
	if len(v.tables[0]) >= d.opts.L0CompactionThreshold {
		backlog += v.v.LevelSize(0) + v.v.LevelSize(1)
	}
	for l := 1; l < manifest.NumLevels-1; l++ {
		if excess := float64(v.v.LevelSize(l)) - d.levelMaxBytes(l); excess > 0 {
			backlog += uint64(excess * float64(1+d.opts.LevelMultiplier))
		}
	}
	return backlog
}

// Tables returns the metadata of every live table, by level.
func (d *DB) Tables() []TableInfo {
	d.mu.Lock()
	v := d.mu.current
	v.ref()
	d.mu.Unlock()
	defer v.unref(d)
	var out []TableInfo
	for l, lt := range v.tables {
		for _, t := range lt {
			out = append(out, t.info(l))
		}
	}
	return out
}

// BlobFiles returns the metadata of every live blob file.
func (d *DB) BlobFiles() []BlobInfo {
	d.mu.Lock()
	v := d.mu.current
	v.ref()
	d.mu.Unlock()
	defer v.unref(d)
	live := v.v.BlobLiveBytes()
	var out []BlobInfo
	for _, m := range v.v.Blobs {
		out = append(out, v.blobs[m.FileNum].info(live[m.FileNum]))
	}
	return out
}
