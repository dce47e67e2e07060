package sstable

import (
	"bytes"
	"fmt"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/objstorage"
)

// WriterOptions configures a Writer. The zero value is usable: NewWriter
// calls EnsureDefaults.
type WriterOptions struct {
	// BlockSize is the target size of a data block before compression. A
	// block is cut after the entry that makes it reach BlockSize, so a
	// single large entry makes a large block. Default 4 KiB.
	BlockSize int
	// BloomBitsPerKey is the number of bloom filter bits per key; 0 means no
	// filter. 10 bits per key give a false positive rate of about 1%.
	BloomBitsPerKey int
	// Compression selects the compression of data and index blocks. A block
	// is stored compressed only if that saves at least 12.5%. Default
	// S2Compression.
	Compression Compression
}

// EnsureDefaults replaces zero fields with their defaults and returns o.
func (o *WriterOptions) EnsureDefaults() *WriterOptions {
	if o.BlockSize <= 0 {
		o.BlockSize = 4 << 10 // a page: small enough for point reads
	}
	if o.BloomBitsPerKey < 0 {
		o.BloomBitsPerKey = 0
	}
	if o.Compression == DefaultCompression {
		o.Compression = S2Compression // cheap; worth it for hot data
	}
	return o
}

// Validate reports options that cannot work.
func (o *WriterOptions) Validate() error {
	if o.BlockSize > maxBlockSize/2 {
		return fmt.Errorf("sstable: block size %d exceeds %d", o.BlockSize, maxBlockSize/2)
	}
	if o.BloomBitsPerKey > 64 {
		return fmt.Errorf("sstable: %d bloom bits per key is too many", o.BloomBitsPerKey)
	}
	if o.Compression > ZstdCompression {
		return fmt.Errorf("sstable: unknown compression %d", o.Compression)
	}
	return nil
}

// Writer writes a table. It is not safe for concurrent use. Errors are
// sticky: after Add fails, every later call fails with the same error, and
// Close aborts the Writable.
type Writer struct {
	w    objstorage.Writable
	opts WriterOptions
	err  error

	offset    uint64 // bytes written so far
	data      blockWriter
	index     blockWriter
	filter    filterWriter
	props     Properties
	lastKey   []byte
	compBuf   []byte
	handleBuf []byte
	// pendingHandle is the handle of the last finished data block, whose
	// index entry waits for the next key to choose a short separator.
	pendingHandle blockHandle
	hasPending    bool
	closed        bool
}

// NewWriter returns a Writer that writes a table to w. The Writer owns w: it
// calls w.Finish on a successful Close and w.Abort on failure.
func NewWriter(w objstorage.Writable, opts WriterOptions) *Writer {
	opts.EnsureDefaults()
	wr := &Writer{w: w, opts: opts}
	wr.filter.bitsPerKey = opts.BloomBitsPerKey
	if err := opts.Validate(); err != nil {
		wr.err = err
	}
	return wr
}

// Add appends an entry. REQUIRES: e.Key is strictly greater than the key of
// the previous entry; a violation returns an error (and fails the Writer).
// The Writer does not retain e's slices.
func (w *Writer) Add(e base.Entry) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return fmt.Errorf("sstable: Add after Close")
	}
	if w.props.NumEntries > 0 && bytes.Compare(e.Key, w.lastKey) <= 0 {
		w.err = fmt.Errorf("sstable: keys out of order: %q after %q", e.Key, w.lastKey)
		return w.err
	}
	if e.Kind > base.KindMax {
		w.err = fmt.Errorf("sstable: bad kind %d for key %q", e.Kind, e.Key)
		return w.err
	}
	if e.Kind == base.KindDelete {
		e.Value = nil
	}
	if w.data.estimatedSize()+entrySize(e.Key, e.Value) > maxBlockSize {
		w.err = fmt.Errorf("sstable: entry of key %q (%d bytes of key and value) too large", e.Key, len(e.Key)+len(e.Value))
		return w.err
	}
	if w.hasPending {
		w.addIndexEntry(separator(w.lastKey, e.Key))
	}
	w.data.add(e.Key, e.Version, e.Kind, e.Value)
	w.filter.add(e.Key)

	p := &w.props
	if p.NumEntries == 0 {
		p.SmallestKey = append([]byte(nil), e.Key...)
		p.MinVersion, p.MaxVersion = e.Version, e.Version
	}
	p.MinVersion = min(p.MinVersion, e.Version)
	p.MaxVersion = max(p.MaxVersion, e.Version)
	p.NumEntries++
	if e.Kind == base.KindDelete {
		p.NumTombstones++
	}
	p.RawKeyBytes += uint64(len(e.Key))
	p.RawValueBytes += uint64(len(e.Value))
	w.lastKey = append(w.lastKey[:0], e.Key...)

	if w.data.estimatedSize() >= w.opts.BlockSize {
		if err := w.flushDataBlock(); err != nil {
			w.err = err
			return err
		}
	}
	return nil
}

// EstimatedSize returns the bytes written so far plus the size of the
// pending data block, before compression. Callers use it to cut output
// tables at a target size.
func (w *Writer) EstimatedSize() uint64 {
	return w.offset + uint64(w.data.estimatedSize())
}

func (w *Writer) addIndexEntry(sep []byte) {
	w.handleBuf = encodeHandle(w.handleBuf[:0], w.pendingHandle)
	w.index.add(sep, 0, base.KindSet, w.handleBuf)
	w.hasPending = false
}

func (w *Writer) flushDataBlock() error {
	h, err := w.writeBlock(w.data.finish(), w.opts.Compression)
	if err != nil {
		return err
	}
	w.data.reset()
	w.pendingHandle, w.hasPending = h, true
	w.props.NumDataBlocks++
	return nil
}

// writeBlock writes a block with its trailer and returns its handle.
func (w *Writer) writeBlock(raw []byte, c Compression) (blockHandle, error) {
	typ, stored, err := compress(c, raw, w.compBuf)
	if err != nil {
		return blockHandle{}, fmt.Errorf("sstable: compress block: %w", err)
	}
	if typ != blockTypeNone {
		w.compBuf = stored[:0]
	}
	h := blockHandle{offset: w.offset, length: uint64(len(stored))}
	t := blockTrailer(stored, typ)
	if err := w.w.Write(stored); err != nil {
		return blockHandle{}, fmt.Errorf("sstable: write block at %d: %w", h.offset, err)
	}
	if err := w.w.Write(t[:]); err != nil {
		return blockHandle{}, fmt.Errorf("sstable: write block at %d: %w", h.offset, err)
	}
	w.offset = h.end()
	return h, nil
}

// Close finishes the table: it flushes the last data block, writes the
// bloom, index and properties blocks and the footer, and calls Finish on
// the Writable, which makes the table visible. On any error it calls Abort
// instead and returns the error. Close returns the table's properties.
func (w *Writer) Close() (Properties, error) {
	if w.closed {
		return Properties{}, fmt.Errorf("sstable: Writer closed twice")
	}
	props, err := w.close()
	w.closed = true
	if err != nil {
		w.err = err
		w.w.Abort()
		return Properties{}, err
	}
	return props, nil
}

func (w *Writer) close() (Properties, error) {
	if w.err != nil {
		return Properties{}, w.err
	}
	if w.data.nEntries > 0 {
		if err := w.flushDataBlock(); err != nil {
			return Properties{}, err
		}
	}
	if w.hasPending {
		w.addIndexEntry(w.lastKey)
	}
	p := &w.props
	if p.NumEntries > 0 {
		p.LargestKey = append([]byte(nil), w.lastKey...)
	}
	p.DataSize = w.offset

	filter, err := w.filter.finish()
	if err != nil {
		return Properties{}, fmt.Errorf("sstable: build bloom filter: %w", err)
	}
	w.filter = filterWriter{} // release the keys
	var f footer
	if f.bloom, err = w.writeBlock(filter, NoCompression); err != nil {
		return Properties{}, err
	}
	if f.index, err = w.writeBlock(w.index.finish(), w.opts.Compression); err != nil {
		return Properties{}, err
	}
	if f.props, err = w.writeBlock(p.encode(), NoCompression); err != nil {
		return Properties{}, err
	}
	if err := w.w.Write(f.encode()); err != nil {
		return Properties{}, fmt.Errorf("sstable: write footer: %w", err)
	}
	w.offset += footerSize
	p.FileSize = w.offset
	if err := w.w.Finish(); err != nil {
		return Properties{}, fmt.Errorf("sstable: finish: %w", err)
	}
	return *p, nil
}

// Abort discards the table. It is a no-op after a successful Close.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	w.w.Abort()
}

// separator returns a short key k with a <= k < b. REQUIRES: a < b.
func separator(a, b []byte) []byte {
	i := sharedPrefixLen(a, b)
	if i < len(a) && i < len(b) && a[i] < 0xff && a[i]+1 < b[i] {
		sep := append([]byte(nil), a[:i+1]...)
		sep[i]++
		return sep
	}
	return a
}
