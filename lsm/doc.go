// Package lsm is tierkv's per-node storage engine: a log-structured merge
// tree of versioned keys.
//
// Every mutation is (key, version, value or tombstone). The version is a
// 64-bit hybrid-logical-clock value chosen by the caller; the engine keeps,
// for each key, the mutation with the highest version, whatever order the
// mutations arrive in. A late write with an older version never hides a
// newer one, and applying the same mutation twice changes nothing.
//
//	db, err := lsm.Open(dir, &lsm.Options{})
//	err = db.Set([]byte("k"), []byte("v"), version, lsm.Sync)
//	v, ver, err := db.Get([]byte("k"))
//
// The write path: Apply validates the batch, appends it to the WAL (group
// commit: concurrent writers share one fdatasync) and, once it is durable,
// inserts it into the mutable memtable. A full memtable is sealed and a new
// one started on a new (recycled, preallocated) WAL segment; a background
// goroutine flushes sealed memtables to L0 tables and records them in the
// MANIFEST, after which their WAL segments are obsolete. When flushes or
// compactions fall behind, writers wait at most MaxWriteStall and then get
// ErrWriteStall: memory stays bounded.
//
// The read path: Get visits the memtables, then L0 newest first, then one
// table per deeper level. Each table records its min and max version, so a
// table whose max version is not above the best version found so far is
// skipped without touching its bloom filter or blocks.
//
// Compaction is leveled (Options.CompactionStrategy = Leveled, the default)
// or size-tiered. It drops shadowed versions and purges a tombstone only
// once its version is older than TombstoneGracePeriod and no table or
// memtable outside the compaction can hold an older version of the key.
// NB: a write that arrives after its key's tombstone was purged, carrying a
// version older than that tombstone (so older than the grace period), is
// visible again; this is the same contract as Cassandra's gc_grace_seconds,
// and the node layer drops hints and repairs older than the grace period.
//
// Large values (Options.ValueSeparationThreshold) are written once, to the
// WAL: a flush references them in place and keeps the segment as a blob
// file, so compactions move small references instead of values. See
// docs/engine.md.
//
// Files in the directory: NNNNNN.log (WAL segments), NNNNNN.sst (tables)
// and NNNNNN.blob (blob files: flushed WAL segments and values rewritten out
// of mostly-garbage blob files), both through objstorage.Provider;
// MANIFEST-NNNNNN (version edits in the WAL record format), CURRENT (names
// the manifest; replaced atomically), LOCK.
package lsm
