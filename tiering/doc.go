// Package tiering moves cold engine objects (tables and blob files) to an
// object store and serves them from there, keeps manifest backups, and
// restores a node from them.
//
// A Manager is an objstorage.Provider: the engine creates objects locally
// through it, and opens them wherever they are. Cold objects (Policy) are
// uploaded, verified (size and CRC32C), copied to an optional fallback
// bucket (erasure-coded shards on peers), recorded in the catalog (the
// local TIERCAT log: tiering's manifest of remote objects), and only then
// deleted locally. A remote object keeps its metadata (bloom filter, index,
// properties, footer) on local disk, so opening it and looking up an absent
// key never touch the bucket; data comes by ranged GETs of aligned chunks
// through a bounded LRU disk cache.
//
//	m, err := tiering.Open(tiering.Options{Dir: dir, NodeID: "n1", Bucket: b, Fallback: eb})
//	db, err := lsm.Open(dir, &lsm.Options{Provider: m})
//	m.Attach(db)                 // background uploads, backups, GC
//	...
//	err = m.Shutdown(ctx)        // final manifest backup
//	err = db.Close()
//	err = m.Close()
//
// A replacement node restores from the latest manifest backup without
// downloading data, and serves at once:
//
//	info, err := tiering.Restore(ctx, tiering.RestoreOptions{Dir: dir, NodeID: "n1", Bucket: b, Fallback: eb})
//	m, err := tiering.Open(...same dir, NodeID and buckets...)
//	db, err := lsm.Open(dir, &lsm.Options{Provider: m})
//	m.Attach(db)
//	go m.Hydrate(ctx, tiering.HydrateOptions{Progress: ...})
//
// See docs/tiering.md for the object layout, the ordering rules and the
// failure cases.
package tiering
