package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// Defaults for Options.
const (
	// DefaultPreallocateSize is the default Options.PreallocateSize: a
	// typical segment holds one memtable's worth of batches, so reserving
	// that much up front avoids block allocation on the write path.
	DefaultPreallocateSize = 64 << 20
	// DefaultMaxPendingBytes is the default Options.MaxPendingBytes. It is
	// far above what one group commit collects from a few dozen writers,
	// so it only bites when the disk falls behind unsynced appends.
	DefaultMaxPendingBytes = 4 << 20
)

// ErrClosed is returned by Append on a Writer that is closed or closing.
var ErrClosed = errors.New("wal: writer closed")

// Options configures a Writer. The zero value of every field selects its
// default; see EnsureDefaults.
type Options struct {
	// FS is the file system that holds the segments. The default is
	// vfs.Default.
	FS vfs.FS
	// Dir is the directory that holds the segments. The default is ".".
	Dir string
	// PreallocateSize is how many bytes of space a Writer reserves at the
	// start of its segment (advisory; see vfs.File.Preallocate). The
	// default is DefaultPreallocateSize.
	PreallocateSize int64
	// MaxPendingBytes bounds the bytes of records that have been appended
	// but not yet written to the file, including those the flusher is
	// writing. Append blocks while this many or more are pending, so the
	// bound can be exceeded by at most one record. The default is
	// DefaultMaxPendingBytes.
	MaxPendingBytes int
	// Logger receives the Writer's log messages. The default discards
	// them.
	Logger *slog.Logger
	// OnSync, if set, is called by the flusher after each successful
	// sync with how long the sync took.
	OnSync func(time.Duration)
}

// EnsureDefaults replaces zero fields of o with their defaults.
func (o *Options) EnsureDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Dir == "" {
		o.Dir = "."
	}
	if o.PreallocateSize == 0 {
		o.PreallocateSize = DefaultPreallocateSize
	}
	if o.MaxPendingBytes == 0 {
		o.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks o after EnsureDefaults.
func (o *Options) Validate() error {
	if o.PreallocateSize < 0 {
		return fmt.Errorf("wal: PreallocateSize %d is negative", o.PreallocateSize)
	}
	if o.MaxPendingBytes < 0 {
		return fmt.Errorf("wal: MaxPendingBytes %d is negative", o.MaxPendingBytes)
	}
	return nil
}

// Stats are cumulative counters of a Writer. For synced appends, the mean
// group-commit size is Records/Syncs.
type Stats struct {
	// Syncs is the number of successful fdatasyncs of the segment.
	Syncs uint64
	// Records is the number of records appended.
	Records uint64
	// BytesWritten is the number of bytes written to the segment file.
	BytesWritten uint64
	// Writes is the number of write calls to the segment file.
	Writes uint64
}

// Writer appends records to one segment. It is safe for concurrent use.
//
// A single flusher goroutine, owned by the Writer and stopped by Close,
// writes everything that concurrent Appends have buffered since its last
// write with one write call, followed by one Sync if any of those records
// asked for it (group commit). Appenders fill one buffer while the flusher
// writes the other.
//
// After a write or Sync fails, the Writer is failed for good: the error is
// returned to every Append whose record is not known to be durable and to
// every later Append. A failed Sync is never retried, because after a
// failed fdatasync the kernel may have dropped the dirty pages and a later
// fdatasync could succeed without the data being on disk.
type Writer struct {
	fs     vfs.FS
	path   string
	logNum uint32
	f      vfs.File
	logger *slog.Logger
	onSync func(time.Duration)
	// maxPending is Options.MaxPendingBytes.
	maxPending int
	// maxSpareCap is the capacity above which a written buffer is dropped
	// instead of being kept for reuse, so that one huge record does not pin
	// its buffer forever.
	maxSpareCap int

	// size is the logical end of the segment: the bytes of all records
	// appended so far, written or not.
	size  atomic.Int64
	stats struct {
		syncs        atomic.Uint64
		records      atomic.Uint64
		bytesWritten atomic.Uint64
		writes       atomic.Uint64
	}

	// mu guards the buffers and the progress of the flusher. Appenders
	// hold it to add a record to buf and while waiting on doneCond; the
	// flusher holds it only to swap buffers and to publish progress, never
	// during I/O. Records are numbered by seq, from 1, in file order.
	mu struct {
		sync.Mutex
		// flushCond wakes the flusher: buf became non-empty or closing
		// was set.
		flushCond sync.Cond
		// doneCond is broadcast when the flusher made progress (bytes
		// written, records synced), failed, or when closing was set.
		doneCond sync.Cond

		// buf holds appended records that the flusher has not taken yet.
		buf []byte
		// spare is the buffer the flusher wrote last, kept for reuse as
		// the next buf. It is nil while the flusher owns it.
		spare []byte
		// pending is len(buf) plus the length of the buffer the flusher
		// is writing. INVARIANT: pending < maxPending + largest record.
		pending int

		// appendedSeq is the seq of the last record added to buf.
		appendedSeq uint64
		// syncReqSeq is the seq of the last record whose Append asked
		// for a sync.
		syncReqSeq uint64
		// syncedSeq is the seq up to which records are durable.
		syncedSeq uint64

		// err is the sticky error of the first failed write or Sync.
		err error
		// closing is set by Close; Append then fails with ErrClosed and
		// the flusher drains, syncs and exits.
		closing bool

		// maxPendingSeen and stalls are for tests: the largest pending
		// seen, and how often an Append waited for space.
		maxPendingSeen int
		stalls         int
	}

	flusherDone chan struct{}
	closeOnce   sync.Once
	closeErr    error
}

// Create creates the segment file with number num in opts.Dir, replacing
// any file of that name, makes its directory entry durable and returns a
// Writer that appends to it.
func Create(opts Options, num base.FileNum) (*Writer, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	path := opts.FS.PathJoin(opts.Dir, SegmentName(num))
	f, err := opts.FS.Create(path)
	if err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", path, err)
	}
	return finishCreate(opts, num, path, f)
}

// CreateRecycled reuses the obsolete segment old as the segment num: it
// renames the file, makes the rename durable, and returns a Writer that
// overwrites the file from offset 0. Stale records beyond the new data are
// never replayed because their logNum differs (see the package doc).
//
// REQUIRES: segment old is obsolete: nothing will replay it again.
func CreateRecycled(opts Options, num, old base.FileNum) (*Writer, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if uint32(num) == uint32(old) {
		return nil, fmt.Errorf("wal: cannot recycle segment %s as %s: same log number", old, num)
	}
	oldPath := opts.FS.PathJoin(opts.Dir, SegmentName(old))
	path := opts.FS.PathJoin(opts.Dir, SegmentName(num))
	if err := opts.FS.Rename(oldPath, path); err != nil {
		return nil, fmt.Errorf("wal: recycle %s as %s: %w", oldPath, path, err)
	}
	f, err := opts.FS.OpenReadWrite(path)
	if err != nil {
		return nil, fmt.Errorf("wal: open recycled %s: %w", path, err)
	}
	return finishCreate(opts, num, path, f)
}

// finishCreate preallocates f, syncs the directory and starts the Writer.
func finishCreate(opts Options, num base.FileNum, path string, f vfs.File) (*Writer, error) {
	if opts.PreallocateSize > 0 {
		if err := f.Preallocate(0, opts.PreallocateSize); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("wal: preallocate %s: %w", path, err)
		}
	}
	if err := vfs.SyncDir(opts.FS, opts.Dir); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("wal: sync dir %s for %s: %w", opts.Dir, path, err)
	}
	w := &Writer{
		fs:          opts.FS,
		path:        path,
		logNum:      uint32(num),
		f:           f,
		logger:      opts.Logger,
		onSync:      opts.OnSync,
		maxPending:  opts.MaxPendingBytes,
		maxSpareCap: max(2*opts.MaxPendingBytes, 1<<20),
		flusherDone: make(chan struct{}),
	}
	w.mu.flushCond.L = &w.mu.Mutex
	w.mu.doneCond.L = &w.mu.Mutex
	go w.flushLoop()
	return w, nil
}

// Append adds a record holding payload to the segment. It copies payload,
// so the caller may reuse it once Append returns.
//
// If sync is true, Append returns nil only after a Sync that covers the
// record returned nil. If sync is false, Append returns once the record is
// buffered; the flusher writes it promptly but does not sync it, so it
// becomes durable only with a later synced Append or Close.
//
// Append blocks while Options.MaxPendingBytes or more bytes are pending.
// It returns the Writer's sticky error once a write or Sync has failed
// (also to synced Appends buffered before the failure), ErrClosed after
// Close, and an error without failing the Writer if payload is longer than
// MaxPayloadSize.
func (w *Writer) Append(payload []byte, sync bool) error {
	_, err := w.AppendAt(payload, sync)
	return err
}

// AppendAt is Append that also returns the offset in the segment file at
// which the payload starts (after its record header), so that callers can
// later read parts of the payload in place.
func (w *Writer) AppendAt(payload []byte, sync bool) (int64, error) {
	if len(payload) > MaxPayloadSize {
		return 0, fmt.Errorf("wal: %s: payload of %d bytes exceeds the maximum of %d",
			w.path, len(payload), MaxPayloadSize)
	}
	// NB: the checksum is computed before taking the lock so that
	// concurrent appenders checksum in parallel.
	var h [headerSize]byte
	encodeHeader(&h, w.logNum, payload)
	n := headerSize + len(payload)

	w.mu.Lock()
	for w.mu.pending >= w.maxPending && w.mu.err == nil && !w.mu.closing {
		w.mu.stalls++
		w.mu.doneCond.Wait()
	}
	if err := w.mu.err; err != nil {
		w.mu.Unlock()
		return 0, err
	}
	if w.mu.closing {
		w.mu.Unlock()
		return 0, ErrClosed
	}
	w.mu.buf = append(w.mu.buf, h[:]...)
	w.mu.buf = append(w.mu.buf, payload...)
	w.mu.pending += n
	w.mu.maxPendingSeen = max(w.mu.maxPendingSeen, w.mu.pending)
	w.mu.appendedSeq++
	seq := w.mu.appendedSeq
	if sync {
		w.mu.syncReqSeq = seq
	}
	off := w.size.Add(int64(n)) - int64(len(payload))
	w.stats.records.Add(1)
	w.mu.flushCond.Signal()
	if !sync {
		w.mu.Unlock()
		return off, nil
	}
	for w.mu.syncedSeq < seq && w.mu.err == nil {
		w.mu.doneCond.Wait()
	}
	var err error
	if w.mu.syncedSeq < seq {
		// INVARIANT: w.mu.err != nil. The record may or may not have
		// reached the disk; it must not be acknowledged.
		err = w.mu.err
	}
	w.mu.Unlock()
	return off, err
}

// Size returns the logical size of the segment: the bytes of all records
// appended so far, including those not yet written to the file. It is the
// offset at which the next record will start.
func (w *Writer) Size() int64 { return w.size.Load() }

// Stats returns the Writer's counters. It is safe to call at any time,
// also after Close.
func (w *Writer) Stats() Stats {
	return Stats{
		Syncs:        w.stats.syncs.Load(),
		Records:      w.stats.records.Load(),
		BytesWritten: w.stats.bytesWritten.Load(),
		Writes:       w.stats.writes.Load(),
	}
}

// Close writes and syncs all appended records, stops the flusher and
// closes the file. It returns the Writer's sticky error if a write or Sync
// failed at any time. Close is idempotent: later calls return the result of
// the first. Appends that race with Close either complete normally or
// return ErrClosed.
func (w *Writer) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.mu.closing = true
		w.mu.flushCond.Signal()
		w.mu.doneCond.Broadcast() // wake Appends waiting for space
		w.mu.Unlock()
		<-w.flusherDone

		w.mu.Lock()
		err := w.mu.err
		w.mu.Unlock()
		if cerr := w.f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("wal: close %s: %w", w.path, cerr)
		}
		w.closeErr = err
	})
	return w.closeErr
}

// flushLoop is the flusher goroutine: it takes the buffered records, writes
// them with one write and, if any of them asked for it (or the Writer is
// closing), syncs. It exits after a failure or once closing with nothing
// left to write or sync.
func (w *Writer) flushLoop() {
	defer close(w.flusherDone)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.mu.buf) == 0 && !w.mu.closing {
			w.mu.flushCond.Wait()
		}
		data := w.mu.buf
		seq := w.mu.appendedSeq
		doSync := w.mu.syncReqSeq > w.mu.syncedSeq ||
			(w.mu.closing && seq > w.mu.syncedSeq)
		if len(data) == 0 && !doSync {
			return // closing, and everything is durable
		}
		w.mu.buf, w.mu.spare = w.mu.spare[:0], nil

		w.mu.Unlock()
		err := w.write(data, doSync)
		w.mu.Lock()

		w.mu.pending -= len(data)
		if cap(data) <= w.maxSpareCap {
			w.mu.spare = data[:0]
		}
		if err != nil {
			w.mu.err = err
			w.mu.doneCond.Broadcast()
			return
		}
		if doSync {
			w.mu.syncedSeq = seq
		}
		w.mu.doneCond.Broadcast()
		if doSync {
			// NB: yield before taking the next buffer, so that the
			// appenders this sync released, if they append again
			// right away, join the next group instead of the one
			// after it. Without this, closed-loop writers split into
			// two cohorts that alternate, and groups hold half of
			// them (16 writers: ~7.8 records per sync instead of
			// ~14.5 in BenchmarkAppend).
			w.mu.Unlock()
			runtime.Gosched()
			w.mu.Lock()
		}
	}
}

// write writes data to the file and syncs it if doSync. It is called only
// by the flusher, without holding mu.
func (w *Writer) write(data []byte, doSync bool) error {
	if len(data) > 0 {
		n, err := w.f.Write(data)
		w.stats.bytesWritten.Add(uint64(n))
		w.stats.writes.Add(1)
		if err == nil && n < len(data) {
			err = fmt.Errorf("short write of %d of %d bytes", n, len(data))
		}
		if err != nil {
			w.logger.Error("wal: write failed; the log is failed for good",
				"file", w.path, "bytes", len(data), "err", err)
			return fmt.Errorf("wal: write %s: %w", w.path, err)
		}
	}
	if doSync {
		start := time.Now()
		if err := w.f.Sync(); err != nil {
			w.logger.Error("wal: sync failed; the log is failed for good",
				"file", w.path, "err", err)
			return fmt.Errorf("wal: sync %s: %w", w.path, err)
		}
		w.stats.syncs.Add(1)
		if w.onSync != nil {
			w.onSync(time.Since(start))
		}
	}
	return nil
}
