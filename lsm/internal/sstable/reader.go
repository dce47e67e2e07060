package sstable

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/internal/cache"
	"github.com/tierkv/tierkv/lsm/objstorage"
)

// Stats counts the work of readers. One Stats may be shared by the readers
// of many tables (see ReaderOptions.Stats); its fields are updated
// atomically.
type Stats struct {
	// BloomChecks counts Get calls that probed a bloom filter.
	BloomChecks atomic.Uint64
	// BloomNegatives counts probes for which the filter excluded the key.
	BloomNegatives atomic.Uint64
	// BloomTruePositives counts probes that said "maybe" for a key that the
	// table holds.
	BloomTruePositives atomic.Uint64
	// BloomFalsePositives counts probes that said "maybe" for a key that the
	// table does not hold.
	BloomFalsePositives atomic.Uint64
	// BlockReads counts reads of data blocks from the Readable. A
	// compaction iterator reads several consecutive blocks at once.
	BlockReads atomic.Uint64
	// BlockBytesRead counts the bytes of those reads (stored sizes, with
	// trailers).
	BlockBytesRead atomic.Uint64
	// BlockCacheHits counts data blocks found in the block cache.
	BlockCacheHits atomic.Uint64
}

// ReaderOptions configures a Reader.
type ReaderOptions struct {
	// Cache is the block cache for data blocks; nil means no cache.
	Cache *cache.Cache
	// FileNum identifies the table in the cache and in error messages. Two
	// open tables sharing a Cache must have distinct FileNums.
	FileNum uint64
	// Name names the table in error messages; the default is derived from
	// FileNum ("000042.sst").
	Name string
	// Stats, if not nil, receives the reader's counters; it may be shared
	// by many readers. If nil, the Reader keeps its own (see Reader.Stats).
	Stats *Stats
}

// indexEntry is a decoded index entry.
type indexEntry struct {
	sep []byte // the separator: >= the last key of the block
	h   blockHandle
}

// Reader reads a table. Its methods are safe for concurrent use, except
// Close, which requires that no other call is in progress.
type Reader struct {
	r      objstorage.Readable
	opts   ReaderOptions
	name   string
	stats  *Stats
	props  Properties
	index  []indexEntry
	filter *bloom.BloomFilter
	closed atomic.Bool
}

// Open opens the table read by r. It reads the footer, then the bloom
// filter, index and properties blocks in a single read, and verifies their
// checksums and consistency; afterwards a point lookup reads at most one
// data block. Bytes that do not decode give an error wrapping
// base.ErrCorruption that names the table and the offset. The Reader owns
// r from then on (Close closes it), but Open does not close r on error.
func Open(ctx context.Context, r objstorage.Readable, opts ReaderOptions) (*Reader, error) {
	rd := &Reader{r: r, opts: opts, name: opts.Name, stats: opts.Stats}
	if rd.name == "" {
		rd.name = objstorage.ObjectName(objstorage.FileTypeTable, opts.FileNum)
	}
	if rd.stats == nil {
		rd.stats = new(Stats)
	}
	size := r.Size()
	if size < footerSize {
		return nil, rd.corruptf(0, "file of %d bytes is too short for a table", size)
	}
	footerOff := size - footerSize
	fb := make([]byte, footerSize)
	if err := r.ReadAt(ctx, fb, footerOff); err != nil {
		return nil, fmt.Errorf("sstable %s: read footer: %w", rd.name, err)
	}
	f, err := decodeFooter(fb, uint64(size))
	if err != nil {
		return nil, rd.corruptf(footerOff, "footer: %v", err)
	}
	meta := make([]byte, uint64(footerOff)-f.bloom.offset)
	if err := r.ReadAt(ctx, meta, int64(f.bloom.offset)); err != nil {
		return nil, fmt.Errorf("sstable %s: read metadata: %w", rd.name, err)
	}
	sub := func(h blockHandle) []byte {
		o := h.offset - f.bloom.offset
		return meta[o : o+h.length+blockTrailerSize]
	}

	// Properties.
	pb, err := rd.readMetaBlock(sub(f.props), f.props.offset, "properties")
	if err != nil {
		return nil, err
	}
	if rd.props, err = decodeProperties(pb); err != nil {
		return nil, rd.corruptf(int64(f.props.offset), "%v", err)
	}
	rd.props.FileSize = uint64(size)
	if rd.props.DataSize != f.bloom.offset {
		return nil, rd.corruptf(int64(f.props.offset), "properties: data size %d but the bloom block starts at %d", rd.props.DataSize, f.bloom.offset)
	}

	// Index.
	ib, err := rd.readMetaBlock(sub(f.index), f.index.offset, "index")
	if err != nil {
		return nil, err
	}
	if rd.index, err = decodeIndex(ib, f.bloom.offset); err != nil {
		return nil, rd.corruptf(int64(f.index.offset), "index block: %v", err)
	}
	if uint64(len(rd.index)) != rd.props.NumDataBlocks {
		return nil, rd.corruptf(int64(f.index.offset), "index block has %d entries, properties say %d data blocks", len(rd.index), rd.props.NumDataBlocks)
	}
	if n := len(rd.index); n > 0 && bytes.Compare(rd.index[n-1].sep, rd.props.LargestKey) < 0 {
		return nil, rd.corruptf(int64(f.index.offset), "last separator %q is below the largest key %q", rd.index[n-1].sep, rd.props.LargestKey)
	}
	if (len(rd.index) == 0) != (rd.props.NumEntries == 0) {
		return nil, rd.corruptf(int64(f.props.offset), "properties: %d entries in %d data blocks", rd.props.NumEntries, len(rd.index))
	}

	// Bloom filter.
	bb, err := rd.readMetaBlock(sub(f.bloom), f.bloom.offset, "bloom")
	if err != nil {
		return nil, err
	}
	if rd.filter, err = decodeBloom(bb); err != nil {
		return nil, rd.corruptf(int64(f.bloom.offset), "%v", err)
	}
	return rd, nil
}

// readMetaBlock checks and decompresses a metadata block.
func (r *Reader) readMetaBlock(phys []byte, off uint64, what string) ([]byte, error) {
	contents, typ, err := checkBlockTrailer(phys)
	if err != nil {
		return nil, r.corruptf(int64(off), "%s block: %v", what, err)
	}
	b, err := decompress(typ, contents, maxBlockSize)
	if err != nil {
		return nil, r.corruptf(int64(off), "%s block: %v", what, err)
	}
	return b, nil
}

// decodeIndex decodes the index block contents of a table whose data blocks
// end at dataEnd. It checks that the handles tile [0, dataEnd) in order and
// that the separators strictly increase. The separators are copied into one
// allocation.
func decodeIndex(b []byte, dataEnd uint64) ([]indexEntry, error) {
	blk, err := decodeBlock(b)
	if err != nil {
		return nil, err
	}
	var it blockIter
	it.init(blk)
	var entries []indexEntry
	keyBytes := 0
	next := uint64(0)
	for ok := it.first(); ok; ok = it.nextEntry() {
		e := it.entry()
		h, err := decodeHandle(e.Value)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %v", len(entries), err)
		}
		if h.offset != next || h.length > dataEnd || h.end() > dataEnd {
			return nil, fmt.Errorf("entry %d: data block handle (%d, %d) does not follow the previous block ending at %d (data ends at %d)",
				len(entries), h.offset, h.length, next, dataEnd)
		}
		next = h.end()
		entries = append(entries, indexEntry{h: h})
		keyBytes += len(e.Key)
	}
	if next != dataEnd {
		return nil, fmt.Errorf("data blocks end at %d, but the data ends at %d", next, dataEnd)
	}
	arena := make([]byte, 0, keyBytes)
	i := 0
	for ok := it.first(); ok; ok = it.nextEntry() {
		start := len(arena)
		arena = append(arena, it.key...)
		entries[i].sep = arena[start:len(arena):len(arena)]
		i++
	}
	return entries, nil
}

func (r *Reader) corruptf(off int64, format string, args ...any) error {
	return base.CorruptionErrorf("sstable %s: offset %d: %s", r.name, off, fmt.Sprintf(format, args...))
}

// Properties returns the table's properties. The caller must not modify
// them.
func (r *Reader) Properties() *Properties { return &r.props }

// Stats returns the counters the Reader updates: ReaderOptions.Stats if it
// was set.
func (r *Reader) Stats() *Stats { return r.stats }

// MayContain reports whether the bloom filter admits that the table may hold
// key. It is true when the table has no filter. It does not update Stats.
func (r *Reader) MayContain(key []byte) bool {
	return r.filter == nil || r.filter.Test(key)
}

// HasFilter reports whether the table has a bloom filter.
func (r *Reader) HasFilter() bool { return r.filter != nil }

// Get returns the table's entry for key, if any. It checks the key range,
// then the bloom filter, then binary-searches the index and reads one data
// block, through the cache.
//
// The returned Key and Value are immutable and stay valid after Get
// returns, even after the Reader is closed: they alias a data block that is
// never modified or reused (possibly shared through the cache), or a fresh
// copy. The caller must not modify them. NB: holding them keeps the whole
// block in memory.
func (r *Reader) Get(ctx context.Context, key []byte) (base.Entry, bool, error) {
	if len(r.index) == 0 || bytes.Compare(key, r.props.SmallestKey) < 0 || bytes.Compare(key, r.props.LargestKey) > 0 {
		return base.Entry{}, false, nil
	}
	if r.filter != nil {
		r.stats.BloomChecks.Add(1)
		if !r.filter.Test(key) {
			r.stats.BloomNegatives.Add(1)
			return base.Entry{}, false, nil
		}
	}
	i := r.searchIndex(key)
	if i == len(r.index) {
		// Unreachable since key <= LargestKey <= the last separator.
		return base.Entry{}, false, nil
	}
	b, err := r.readDataBlock(ctx, i, true, nil)
	if err != nil {
		return base.Entry{}, false, err
	}
	e, ok := b.get(key)
	if r.filter != nil {
		if ok {
			r.stats.BloomTruePositives.Add(1)
		} else {
			r.stats.BloomFalsePositives.Add(1)
		}
	}
	return e, ok, nil
}

// searchIndex returns the index of the first data block whose separator is
// >= key, or len(r.index).
func (r *Reader) searchIndex(key []byte) int {
	return sort.Search(len(r.index), func(i int) bool {
		return bytes.Compare(r.index[i].sep, key) >= 0
	})
}

// readDataBlock returns data block i, from the cache if it is there. On a
// miss it reads the block (from ra, a readahead buffer, if it covers it),
// verifies and decodes it, and inserts it into the cache if fill is set.
func (r *Reader) readDataBlock(ctx context.Context, i int, fill bool, ra *readahead) (block, error) {
	h := r.index[i].h
	if data, ok := r.opts.Cache.Get(r.opts.FileNum, h.offset); ok {
		r.stats.BlockCacheHits.Add(1)
		return parseBlockTrusted(data), nil
	}
	var phys []byte
	if ra != nil {
		var err error
		if phys, err = ra.read(ctx, r, i); err != nil {
			return block{}, err
		}
	} else {
		phys = make([]byte, h.length+blockTrailerSize)
		if err := r.r.ReadAt(ctx, phys, int64(h.offset)); err != nil {
			return block{}, fmt.Errorf("sstable %s: read data block at %d: %w", r.name, h.offset, err)
		}
		r.stats.BlockReads.Add(1)
		r.stats.BlockBytesRead.Add(uint64(len(phys)))
	}
	contents, typ, err := checkBlockTrailer(phys)
	if err != nil {
		return block{}, r.corruptf(int64(h.offset), "data block: %v", err)
	}
	data, err := decompress(typ, contents, maxBlockSize)
	if err != nil {
		return block{}, r.corruptf(int64(h.offset), "data block: %v", err)
	}
	if typ == blockTypeNone && ra != nil {
		// NB: the readahead buffer is reused; a block that outlives it (in
		// the cache) needs its own copy.
		if fill && r.opts.Cache != nil {
			data = append([]byte(nil), data...)
		}
	}
	b, err := decodeBlock(data)
	if err != nil {
		return block{}, r.corruptf(int64(h.offset), "data block: %v", err)
	}
	if n := b.numRestarts; n == 0 {
		return block{}, r.corruptf(int64(h.offset), "empty data block")
	}
	if fill {
		r.opts.Cache.Set(r.opts.FileNum, h.offset, data)
	}
	return b, nil
}

// Close closes the Readable. It is idempotent. REQUIRES: no other method
// call or iterator of the Reader is in progress.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if err := r.r.Close(); err != nil {
		return fmt.Errorf("sstable %s: close: %w", r.name, err)
	}
	return nil
}

// MetaOffset reads and checks the footer of the table read by r and returns
// the offset at which its metadata (bloom filter, index, properties,
// footer) starts; Open reads [MetaOffset, Size) in two reads and nothing
// else. A tiering provider keeps that range on local disk so that opening a
// remote table, and looking up an absent key, never touch the object store.
func MetaOffset(ctx context.Context, r objstorage.Readable, name string) (int64, error) {
	size := r.Size()
	if size < footerSize {
		return 0, base.CorruptionErrorf("sstable %s: file of %d bytes is too short for a table", name, size)
	}
	fb := make([]byte, footerSize)
	if err := r.ReadAt(ctx, fb, size-footerSize); err != nil {
		return 0, fmt.Errorf("sstable %s: read footer: %w", name, err)
	}
	f, err := decodeFooter(fb, uint64(size))
	if err != nil {
		return 0, base.CorruptionErrorf("sstable %s at offset %d: footer: %v", name, size-footerSize, err)
	}
	return int64(f.bloom.offset), nil
}
