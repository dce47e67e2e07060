package sstable

import (
	"context"
	"fmt"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

// compactionReadaheadSize is the size a compaction iterator reads at once:
// consecutive data blocks up to this many bytes in one ReadAt, which is one
// ranged GET on a remote table.
const compactionReadaheadSize = 512 << 10

// Iter iterates over the entries of a table. It implements
// base.InternalIterator. It is not safe for concurrent use; distinct
// iterators of a Reader may be used concurrently.
type Iter struct {
	r   *Reader
	ctx context.Context
	// fill says whether blocks read from the file are inserted into the
	// cache.
	fill bool
	ra   *readahead // nil unless a compaction iterator
	// blockIdx is the index of the loaded data block; -1 if none.
	blockIdx int
	bi       blockIter
	err      error
	closed   bool
}

var _ base.InternalIterator = (*Iter)(nil)

// NewIter returns an iterator over the table. Blocks are read lazily, one at
// a time, through the block cache, and inserted into it. The iterator must
// be closed; it must not be used after the Reader is closed.
func (r *Reader) NewIter(ctx context.Context) base.InternalIterator {
	return &Iter{r: r, ctx: ctx, fill: true, blockIdx: -1}
}

// NewCompactionIter returns an iterator for a sequential scan of the whole
// table, such as a compaction: it uses cached blocks but does not insert
// the blocks it reads into the cache, so that the scan does not evict the
// working set, and it reads consecutive blocks in large reads (512 KiB).
func (r *Reader) NewCompactionIter(ctx context.Context) base.InternalIterator {
	return &Iter{r: r, ctx: ctx, fill: false, ra: &readahead{}, blockIdx: -1}
}

// loadBlock loads data block i and positions nothing.
func (it *Iter) loadBlock(i int) bool {
	if it.blockIdx == i {
		return true
	}
	it.blockIdx = -1
	b, err := it.r.readDataBlock(it.ctx, i, it.fill, it.ra)
	if err != nil {
		it.err = err
		return false
	}
	it.bi.init(b)
	it.blockIdx = i
	return true
}

// skipForward moves to the first entry of the blocks after the current one
// until it finds one.
func (it *Iter) skipForward() bool {
	for it.blockIdx+1 < len(it.r.index) {
		if !it.loadBlock(it.blockIdx + 1) {
			return false
		}
		if it.bi.first() {
			return true
		}
	}
	it.bi.valid = false
	return false
}

// First is part of the base.InternalIterator interface.
func (it *Iter) First() bool {
	if it.closed || it.err != nil {
		return false
	}
	if len(it.r.index) == 0 {
		it.bi.valid = false
		return false
	}
	if !it.loadBlock(0) {
		return false
	}
	if it.bi.first() {
		return true
	}
	return it.skipForward()
}

// SeekGE is part of the base.InternalIterator interface.
func (it *Iter) SeekGE(key []byte) bool {
	if it.closed || it.err != nil {
		return false
	}
	i := it.r.searchIndex(key)
	if i == len(it.r.index) {
		it.bi.valid = false
		return false
	}
	if !it.loadBlock(i) {
		return false
	}
	if it.bi.seekGE(key) {
		return true
	}
	return it.skipForward()
}

// Next is part of the base.InternalIterator interface.
func (it *Iter) Next() bool {
	if it.closed || it.err != nil || !it.bi.valid {
		return false
	}
	if it.bi.nextEntry() {
		return true
	}
	return it.skipForward()
}

// Entry is part of the base.InternalIterator interface. Key aliases the
// iterator's buffer and Value a data block; both are valid until the next
// positioning call or Close.
func (it *Iter) Entry() base.Entry { return it.bi.entry() }

// Error is part of the base.InternalIterator interface.
func (it *Iter) Error() error { return it.err }

// Close is part of the base.InternalIterator interface.
func (it *Iter) Close() error {
	if it.closed {
		return it.err // idempotent
	}
	it.closed = true
	it.bi = blockIter{}
	it.ra = nil
	it.blockIdx = -1
	return it.err
}

// readahead serves the data blocks of a sequential scan from large reads
// covering several consecutive blocks.
type readahead struct {
	buf        []byte
	start, end int // the data blocks [start, end) are in buf
}

// read returns the stored bytes (with trailer) of data block i. They alias
// buf and are valid until the next read.
func (ra *readahead) read(ctx context.Context, r *Reader, i int) ([]byte, error) {
	if i < ra.start || i >= ra.end {
		first := r.index[i].h
		end := i + 1
		for end < len(r.index) && r.index[end].h.end()-first.offset <= compactionReadaheadSize {
			end++
		}
		n := r.index[end-1].h.end() - first.offset
		if uint64(cap(ra.buf)) < n {
			ra.buf = make([]byte, n)
		}
		ra.buf = ra.buf[:n]
		ra.start, ra.end = i, i // invalid until the read succeeds
		if err := r.r.ReadAt(ctx, ra.buf, int64(first.offset)); err != nil {
			return nil, fmt.Errorf("sstable %s: read data blocks %d-%d at %d: %w", r.name, i, end-1, first.offset, err)
		}
		r.stats.BlockReads.Add(1)
		r.stats.BlockBytesRead.Add(n)
		ra.start, ra.end = i, end
	}
	baseOff := r.index[ra.start].h.offset
	h := r.index[i].h
	return ra.buf[h.offset-baseOff : h.end()-baseOff], nil
}
