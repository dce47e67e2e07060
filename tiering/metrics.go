package tiering

import (
	"sync/atomic"

	"github.com/tierkv/tierkv/lsm/objstorage"
)

type counters struct {
	bytesUp, objectsUp, uploadFailures, fallbackBytesUp atomic.Uint64
	bytesDown, getOps, remoteReads                      atomic.Uint64
	cacheHits, cacheMisses                              atomic.Uint64
	// fallbackReads and fallbackBytes count hydration downloads sent to
	// the fallback bucket because the primary's bytes failed
	// verification; the fallback combinator counts the rest.
	fallbackReads, fallbackBytes       atomic.Uint64
	backups, backupFailures, gcDeleted atomic.Uint64
	hydratedBytes, hydratedObjects     atomic.Uint64
}

// Metrics is a snapshot of a Manager's counters and gauges. The node layer
// exports it to Prometheus.
type Metrics struct {
	// BytesUploaded and ObjectsUploaded count verified uploads to the
	// primary bucket; UploadFailures the failed attempts; UploadsPending
	// the cold objects of the last pass not uploaded yet.
	BytesUploaded, ObjectsUploaded, UploadFailures uint64
	UploadsPending                                 int
	// FallbackBytesUploaded counts bytes written to the fallback bucket.
	FallbackBytesUploaded uint64
	// BytesDownloaded and GetOps count ranged reads of object data (both
	// buckets); RemoteReads counts engine reads that needed data from
	// outside the kept metadata.
	BytesDownloaded, GetOps, RemoteReads uint64
	// CacheHits and CacheMisses count chunk lookups in the disk cache;
	// CacheSize is the bytes it holds.
	CacheHits, CacheMisses uint64
	CacheSize              int64
	// FallbackReads counts reads sent to the fallback bucket (after a
	// primary failure or a hedge); HedgedReads those sent because the
	// primary was slower than HedgeDelay; FallbackBytes the bytes the
	// fallback served.
	FallbackReads, HedgedReads, FallbackBytes uint64
	// Backups counts uploaded manifest backups; BackupFailures the failed
	// ones; GCDeleted the objects GC deleted.
	Backups, BackupFailures, GCDeleted uint64
	// HydratedBytes and HydratedObjects count objects downloaded to local
	// files by Hydrate.
	HydratedBytes, HydratedObjects uint64
	// LocalBytes is the size of the objects with a local copy;
	// RemoteBytes of those served only from the object store.
	LocalBytes, RemoteBytes int64
	LocalObjects            int
	RemoteObjects           int
}

// CacheHitRatio returns hits / (hits + misses), or 0.
func (m *Metrics) CacheHitRatio() float64 {
	if t := m.CacheHits + m.CacheMisses; t > 0 {
		return float64(m.CacheHits) / float64(t)
	}
	return 0
}

// Metrics returns a snapshot of the metrics.
func (m *Manager) Metrics() Metrics {
	c := &m.m
	fb := m.reads.stats()
	out := Metrics{
		BytesUploaded: c.bytesUp.Load(), ObjectsUploaded: c.objectsUp.Load(), UploadFailures: c.uploadFailures.Load(),
		FallbackBytesUploaded: c.fallbackBytesUp.Load(),
		BytesDownloaded:       c.bytesDown.Load(), GetOps: c.getOps.Load(), RemoteReads: c.remoteReads.Load(),
		CacheHits: c.cacheHits.Load(), CacheMisses: c.cacheMisses.Load(), CacheSize: m.cache.size(),
		FallbackReads: c.fallbackReads.Load() + fb.FallbackReads, HedgedReads: fb.HedgedReads,
		FallbackBytes: c.fallbackBytes.Load() + fb.FallbackBytes,
		Backups:       c.backups.Load(), BackupFailures: c.backupFailures.Load(), GCDeleted: c.gcDeleted.Load(),
		HydratedBytes: c.hydratedBytes.Load(), HydratedObjects: c.hydratedObjects.Load(),
	}
	m.mu.Lock()
	out.UploadsPending = m.mu.pending
	m.mu.Unlock()
	for _, typ := range []objstorage.FileType{objstorage.FileTypeTable, objstorage.FileTypeBlob} {
		nums, _ := m.local.List(typ)
		for _, n := range nums {
			if st, err := m.fs.Stat(m.fs.PathJoin(m.opts.Dir, objstorage.ObjectName(typ, n))); err == nil {
				out.LocalBytes += st.Size()
				out.LocalObjects++
			}
		}
	}
	for _, e := range m.cat.Entries() {
		if _, err := m.fs.Stat(m.fs.PathJoin(m.opts.Dir, objstorage.ObjectName(e.Type, e.Num))); err != nil {
			out.RemoteBytes += e.Size
			out.RemoteObjects++
		}
	}
	return out
}
