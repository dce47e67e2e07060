// Package objectstore is tierkv's object store abstraction: one narrow Bucket
// interface and the helpers every backend shares (name validation, exact-size
// uploads, retries with bounded backoff and jitter, error classification).
//
// The backends live in subpackages (localfs, s3, erasure, faulty; fallback
// combines two buckets for reads) except the
// in-memory one, which ships beside the interface (NewMemBucket) so that any
// package can use it in tests. objectstoretest holds the acceptance suite
// that every backend passes.
//
// The package knows nothing of SSTables or of the rest of tierkv: it stores
// immutable, named byte strings.
//
// Example:
//
//	b := objectstore.NewMemBucket()
//	err := b.Put(ctx, "tables/000001.sst", bytes.NewReader(data), int64(len(data)))
//	rc, err := b.GetRange(ctx, "tables/000001.sst", 4096, 512)
//	defer rc.Close()
//
// See docs/objectstore.md for the contract, the retry policy and the erasure
// shard format.
package objectstore
