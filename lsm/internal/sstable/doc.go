// Package sstable implements the engine's immutable sorted tables.
//
// A table holds at most one entry per key, in strictly increasing bytewise
// key order. An entry is a key, a version, a kind (set or delete) and a
// value. Tables are written once through an objstorage.Writable and read
// with positional whole reads through an objstorage.Readable, so that a
// remote implementation can serve them with ranged GETs: Open reads the
// footer and then the metadata (bloom filter, index, properties) in one
// read, and every point lookup afterwards fetches exactly one data block,
// unless the block cache already has it.
//
// # Usage
//
//	w := sstable.NewWriter(writable, sstable.WriterOptions{BloomBitsPerKey: 10})
//	for _, e := range sortedEntries {
//		if err := w.Add(e); err != nil {
//			return err // the writer is now failed; Close will Abort
//		}
//	}
//	props, err := w.Close()
//
//	r, err := sstable.Open(ctx, readable, sstable.ReaderOptions{Cache: c, FileNum: 42})
//	e, ok, err := r.Get(ctx, key)
//	it := r.NewIter(ctx)
//	for ok := it.First(); ok; ok = it.Next() { ... }
//	err = it.Close()
//
// # File layout
//
//	+----------------+-----+------------------+-------------+-------------+------------------+----------+
//	| data block 0   | ... | data block n-1   | bloom block | index block | properties block | footer   |
//	+----------------+-----+------------------+-------------+-------------+------------------+----------+
//	0                                         ^ DataSize                                     size-64   size
//
// Every block is followed by a 5-byte trailer:
//
//	+--------------------------+-----------+---------------------------------------+
//	| contents (maybe compressed) | type (1) | crc32c(contents || type) (4, LE)     |
//	+--------------------------+-----------+---------------------------------------+
//
// The type byte says how the contents are compressed (0 none, 1 S2, 2 zstd).
// A block handle (offset, length) names the contents without the trailer;
// the block occupies [offset, offset+length+5) in the file. Blocks are
// contiguous: data block i+1 starts right after the trailer of block i, and
// the bloom, index and properties blocks follow the last data block in that
// order; Open checks this.
//
// Data blocks and the index block share one encoding, LevelDB style, with
// the key prefix-compressed against the previous key and a restart point
// (an entry stored with its full key) every 16 entries:
//
//	entry:    shared (uvarint) | unshared (uvarint) | valueLen (uvarint) |
//	          key[shared:] (unshared bytes) | version (8, LE) | kind (1) |
//	          value (valueLen bytes)
//	block:    entry* | restart offset (4, LE)* | restart count (4, LE)
//
// A data block is cut once it reaches the target block size (before
// compression); it is stored compressed only when that saves at least 12.5%.
// An index entry per data block maps a separator key (>= the last key of the
// block and < the first key of the next one) to the handle of the block,
// encoded as the value: offset (uvarint) | length (uvarint); its version is
// 0 and its kind KindSet.
//
// The bloom block holds a bits-and-blooms/bloom/v3 filter over all keys in
// its binary marshaling (m, k, bit count as big-endian uint64s, then the
// words); empty contents mean the table has no filter.
//
// The properties block is a sequence of (tag uvarint, length uvarint,
// payload) records in increasing tag order; integer payloads are uvarints.
// Unknown tags are skipped so that properties can be added later.
//
// The footer has a fixed size of 64 bytes:
//
//	+--------------------+--------------------+--------------------+---------+-----------+------------+
//	| bloom handle (16)  | index handle (16)  | props handle (16)  | version | magic (8) | crc32c (4) |
//	| offset, length as fixed 8-byte LE each                     | (4, LE) |           | of [0, 60) |
//	+--------------------+--------------------+--------------------+---------+-----------+------------+
//
// Corrupt bytes are reported as errors that wrap base.ErrCorruption and
// name the table and the offset; decoding never panics.
//
// # Compression
//
// S2Compression uses github.com/klauspost/compress/s2 in its native block
// format (not the Snappy-compatible one): it compresses faster and better
// than Snappy, and decoding is about as fast. ZstdCompression uses
// github.com/klauspost/compress/zstd at its default level, for colder data
// where size matters more than CPU. Decoders bound the decompressed size
// declared by the block header before allocating.
package sstable
