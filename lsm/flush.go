package lsm

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/internal/blob"
	"github.com/tierkv/tierkv/lsm/internal/manifest"
	"github.com/tierkv/tierkv/lsm/internal/memtable"
	"github.com/tierkv/tierkv/lsm/internal/sstable"
	"github.com/tierkv/tierkv/lsm/internal/wal"
	"github.com/tierkv/tierkv/lsm/objstorage"
)

// backgroundRetryDelay is how long a failed flush or compaction waits
// before it is tried again.
const backgroundRetryDelay = time.Second

func (d *DB) writerOptions() sstable.WriterOptions {
	c := sstable.NoCompression
	switch d.opts.Compression {
	case S2Compression:
		c = sstable.S2Compression
	case ZstdCompression:
		c = sstable.ZstdCompression
	}
	bits := d.opts.BloomBitsPerKey
	if bits < 0 {
		bits = 0
	}
	return sstable.WriterOptions{BlockSize: d.opts.BlockSize, BloomBitsPerKey: bits, Compression: c}
}

// tableOutput writes one table.
type tableOutput struct {
	num base.FileNum
	w   *sstable.Writer
	// refs counts the value bytes the table references per blob file.
	refs map[base.FileNum]uint64
}

// blobOutput writes the separated values of one flush or compaction.
type blobOutput struct {
	num        base.FileNum
	w          *blob.Writer
	valueBytes uint64
}

func (d *DB) newBlobOutput(limited bool) (*blobOutput, error) {
	d.mu.Lock()
	num := d.allocFileNumLocked()
	d.mu.Unlock()
	wr, err := d.provider.Create(bgCtx, objstorage.FileTypeBlob, uint64(num))
	if err != nil {
		return nil, fmt.Errorf("lsm: create blob file %s: %w", num, err)
	}
	if limited {
		wr = &limitedWritable{Writable: wr, d: d, gc: true}
	}
	return &blobOutput{num: num, w: blob.NewWriter(wr, num)}, nil
}

func (o *blobOutput) finish(d *DB) (*manifest.BlobMeta, error) {
	size, err := o.w.Close()
	if err != nil {
		return nil, fmt.Errorf("lsm: write blob file %s: %w", o.num, err)
	}
	return &manifest.BlobMeta{FileNum: o.num, Size: size, NumValues: o.w.Count(), ValueBytes: o.valueBytes,
		CreatedUnixMilli: d.opts.Clock.Now().UnixMilli()}, nil
}

// separator moves large values of the entries written to a table into a
// blob file it creates on first use.
type separator struct {
	d       *DB
	limited bool
	out     *blobOutput
	scratch []byte
}

// add writes e to t, first moving its value to the blob file if it is at
// least ValueSeparationThreshold bytes.
func (s *separator) add(t *tableOutput, e base.Entry) error {
	if e.Kind == base.KindSet && s.d.opts.ValueSeparationThreshold > 0 && len(e.Value) >= s.d.opts.ValueSeparationThreshold {
		if s.out == nil {
			var err error
			if s.out, err = s.d.newBlobOutput(s.limited); err != nil {
				return err
			}
		}
		ref, err := s.out.w.Add(e.Value)
		if err != nil {
			return fmt.Errorf("lsm: write blob file %s: %w", s.out.num, err)
		}
		s.out.valueBytes += ref.Length
		s.scratch = ref.Encode(s.scratch[:0])
		e.Kind, e.Value = base.KindValueRef, s.scratch
	}
	return t.add(e)
}

// add writes e to the table, counting the blob bytes it references.
func (t *tableOutput) add(e base.Entry) error {
	if e.Kind == base.KindValueRef {
		ref, err := blob.DecodeRef(e.Value)
		if err != nil {
			return err
		}
		if t.refs == nil {
			t.refs = map[base.FileNum]uint64{}
		}
		t.refs[ref.FileNum] += ref.Length
	}
	return t.w.Add(e)
}

func (d *DB) newTableOutput(limited bool) (*tableOutput, error) {
	d.mu.Lock()
	num := d.allocFileNumLocked()
	d.mu.Unlock()
	wr, err := d.provider.Create(bgCtx, objstorage.FileTypeTable, uint64(num))
	if err != nil {
		return nil, fmt.Errorf("lsm: create table %s: %w", num, err)
	}
	if limited {
		wr = &limitedWritable{Writable: wr, d: d}
	}
	return &tableOutput{num: num, w: sstable.NewWriter(wr, d.writerOptions())}, nil
}

func (o *tableOutput) finish(d *DB) (*manifest.TableMeta, error) {
	p, err := o.w.Close()
	if err != nil {
		return nil, fmt.Errorf("lsm: write table %s: %w", o.num, err)
	}
	m := &manifest.TableMeta{
		FileNum: o.num, Size: p.FileSize, Smallest: p.SmallestKey, Largest: p.LargestKey,
		MinVersion: p.MinVersion, MaxVersion: p.MaxVersion, NumEntries: p.NumEntries, NumTombstones: p.NumTombstones,
		CreatedUnixMilli: d.opts.Clock.Now().UnixMilli(),
	}
	for num, n := range o.refs {
		m.BlobRefs = append(m.BlobRefs, manifest.BlobRef{FileNum: num, ValueBytes: n})
	}
	slices.SortFunc(m.BlobRefs, func(a, b manifest.BlobRef) int { return cmp.Compare(a.FileNum, b.FileNum) })
	return m, nil
}

// writeL0 writes a memtable to a new table. Large values whose bytes lie in
// a WAL segment are referenced in place (segs lists those segments and the
// values referenced in each); large values without a location go to a new
// blob file (bm, nil if none). The table and blob file are durable on
// return.
//
// With inPlace false (the WAL segment failed to close, so its bytes cannot
// be trusted) every large value is copied into the new blob file instead.
func (d *DB) writeL0(mem *memtable.Memtable, inPlace bool) (_ *manifest.TableMeta, bm *manifest.BlobMeta, segs map[base.FileNum]int, _ error) {
	out, err := d.newTableOutput(false)
	if err != nil {
		return nil, nil, nil, err
	}
	sep := &separator{d: d}
	abort := func() {
		out.w.Abort()
		if sep.out != nil {
			sep.out.w.Abort()
		}
	}
	segs = map[base.FileNum]int{}
	thr := d.opts.ValueSeparationThreshold
	it := mem.NewIter()
	for ok := it.First(); ok; ok = it.Next() {
		e, loc := it.EntryLoc()
		if inPlace && loc.FileNum != 0 && thr > 0 && len(e.Value) >= thr {
			ref := blob.Ref{FileNum: loc.FileNum, Offset: loc.Offset, Length: uint64(len(e.Value))}
			sep.scratch = ref.Encode(sep.scratch[:0])
			e.Kind, e.Value = base.KindValueRef, sep.scratch
			segs[loc.FileNum]++
			err = out.add(e)
		} else {
			err = sep.add(out, e)
		}
		if err != nil {
			abort()
			return nil, nil, nil, fmt.Errorf("lsm: flush to table %s: %w", out.num, err)
		}
	}
	if sep.out != nil {
		if bm, err = sep.out.finish(d); err != nil {
			out.w.Abort()
			return nil, nil, nil, err
		}
		d.m.flushBytes.Add(bm.Size)
	}
	meta, err := out.finish(d)
	if err != nil {
		if bm != nil {
			_ = d.provider.Remove(objstorage.FileTypeBlob, uint64(bm.FileNum))
		}
		return nil, nil, nil, err
	}
	d.m.flushBytes.Add(meta.Size)
	return meta, bm, segs, nil
}

func (d *DB) flushLoop() {
	defer d.wg.Done()
	for {
		select {
		case <-d.closing:
			return
		case <-d.flushCh:
		}
		for {
			d.mu.Lock()
			if d.mu.closed || len(d.mu.imm) == 0 {
				d.mu.Unlock()
				break
			}
			me := d.mu.imm[0]
			d.mu.Unlock()
			if err := d.flushMemtable(me); err != nil && !d.backOff(err) {
				return
			}
		}
	}
}

// backOff reports a failed flush or compaction and waits before the retry.
// It returns false when the loop should stop instead: the DB is closing or
// stopped after an unrecoverable error.
func (d *DB) backOff(err error) bool {
	d.reportBackgroundError(err)
	d.mu.Lock()
	failed := d.mu.bgErr != nil
	d.mu.Unlock()
	if failed {
		return false
	}
	select {
	case <-d.closing:
		return false
	case <-time.After(backgroundRetryDelay):
		return true
	}
}

func (d *DB) reportBackgroundError(err error) {
	d.opts.Logger.Error("lsm: background work failed; will retry", "err", err)
	if f := d.opts.EventListener.BackgroundError; f != nil {
		f(err)
	}
}

// flushMemtable writes the oldest sealed memtable to an L0 table and
// retires it with its WAL segment.
func (d *DB) flushMemtable(me *memEntry) error {
	start := d.opts.Clock.Now()
	me.writers.Wait()
	// Closing the segment syncs what NoSync writes left buffered; the
	// data is in the memtable either way, and the table below makes it
	// durable.
	walErr := me.wal.Close()
	if walErr != nil {
		d.opts.Logger.Warn("lsm: closing WAL segment failed; copying its values instead of referencing them",
			"file", wal.SegmentName(me.logNum), "err", walErr)
	}
	edit := &manifest.VersionEdit{}
	var newTables []*table
	var newBlobs []*blobFile
	var meta *manifest.TableMeta
	segmentIsBlob := false
	if !me.mem.Empty() {
		var bm *manifest.BlobMeta
		var segs map[base.FileNum]int
		var err error
		if meta, bm, segs, err = d.writeL0(me.mem, walErr == nil); err != nil {
			return err
		}
		if segs[me.logNum] > 0 {
			// The table references values in the segment: keep it, as a
			// blob file, instead of recycling it.
			sm, err := d.segmentToBlob(me.logNum, d.path(wal.SegmentName(me.logNum)), me.wal.Size())
			if err != nil {
				return err
			}
			sm.NumValues = uint64(segs[me.logNum])
			segmentIsBlob = true
			b, err := d.openBlob(sm)
			if err != nil {
				return err
			}
			newBlobs = append(newBlobs, b)
			edit.AddedBlobs = append(edit.AddedBlobs, sm)
		}
		if bm != nil {
			b, err := d.openBlob(bm)
			if err != nil {
				closeAll(nil, newBlobs)
				return err
			}
			newBlobs = append(newBlobs, b)
			edit.AddedBlobs = append(edit.AddedBlobs, bm)
		}
		t, err := d.openTable(meta)
		if err != nil {
			closeAll(nil, newBlobs)
			return err
		}
		newTables = append(newTables, t)
		edit.Added = append(edit.Added, manifest.NewTable{Level: 0, Meta: meta})
	}
	d.mu.Lock()
	if len(d.mu.imm) > 1 {
		edit.LogNum = d.mu.imm[1].logNum
	} else {
		edit.LogNum = d.mu.mem.logNum
	}
	d.mu.Unlock()
	var removeLog bool
	err := d.logAndApply(edit, newTables, newBlobs, func() {
		d.mu.imm = d.mu.imm[1:]
		if segmentIsBlob {
			// Kept as a blob file.
		} else if len(d.mu.recycle) < maxRecycledLogs {
			d.mu.recycle = append(d.mu.recycle, me.logNum)
		} else {
			removeLog = true
		}
		d.signalBackgroundDoneLocked()
	})
	if err != nil {
		closeAll(newTables, newBlobs)
		return err
	}
	st := me.wal.Stats()
	d.m.walSyncs.Add(st.Syncs)
	d.m.walRecords.Add(st.Records)
	d.m.walBytes.Add(st.BytesWritten)
	if removeLog {
		_ = d.fs.Remove(d.path(wal.SegmentName(me.logNum)))
	}
	d.m.flushes.Add(1)
	if f := d.opts.EventListener.BlobCreated; f != nil {
		for _, b := range newBlobs {
			f(b.info(b.meta.ValueBytes))
		}
	}
	if meta != nil {
		info := newTables[0].info(0)
		if f := d.opts.EventListener.TableCreated; f != nil {
			f(info)
		}
		if f := d.opts.EventListener.FlushEnd; f != nil {
			f(FlushInfo{Output: info, Duration: d.opts.Clock.Now().Sub(start)})
		}
	}
	d.maybeScheduleCompaction()
	return nil
}

// closeAll closes the readers of tables and blob files that were never
// installed.
func closeAll(tables []*table, blobs []*blobFile) {
	for _, t := range tables {
		t.reader.Close()
	}
	for _, b := range blobs {
		b.reader.Close()
	}
}

// limitedWritable throttles compaction output through the DB's limiter.
type limitedWritable struct {
	objstorage.Writable
	d *DB
	// gc: the output holds values a compaction copies, paced by d.gc too
	// (gcpace.go).
	gc bool
}

// compactionBurst is the largest chunk a compaction writes at once; the
// limiter's burst must be at least this.
const compactionBurst = 256 << 10

func (w *limitedWritable) Write(p []byte) error {
	for len(p) > 0 {
		n := min(len(p), compactionBurst)
		if err := w.d.limiter.WaitN(w.d.closingCtx(), n); err != nil {
			return fmt.Errorf("lsm: compaction throttle: %w", err)
		}
		if w.gc {
			if err := w.d.gc.wait(n); err != nil {
				return fmt.Errorf("lsm: blob rewrite pacing: %w", err)
			}
		}
		if err := w.Writable.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}
