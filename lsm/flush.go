package lsm

import (
	"fmt"
	"time"

	"github.com/tierkv/tierkv/lsm/internal/base"
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
	return &manifest.TableMeta{
		FileNum: o.num, Size: p.FileSize, Smallest: p.SmallestKey, Largest: p.LargestKey,
		MinVersion: p.MinVersion, MaxVersion: p.MaxVersion, NumEntries: p.NumEntries, NumTombstones: p.NumTombstones,
		CreatedUnixMilli: d.opts.Clock.Now().UnixMilli(),
	}, nil
}

// writeL0 writes a memtable to a new table.
func (d *DB) writeL0(mem *memtable.Memtable) (*manifest.TableMeta, error) {
	out, err := d.newTableOutput(false)
	if err != nil {
		return nil, err
	}
	it := mem.NewIter()
	for ok := it.First(); ok; ok = it.Next() {
		if err := out.w.Add(it.Entry()); err != nil {
			out.w.Abort()
			return nil, fmt.Errorf("lsm: flush to table %s: %w", out.num, err)
		}
	}
	meta, err := out.finish(d)
	if err != nil {
		return nil, err
	}
	d.m.flushBytes.Add(meta.Size)
	return meta, nil
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
			if err := d.flushMemtable(me); err != nil {
				d.reportBackgroundError(err)
				select {
				case <-d.closing:
					return
				case <-time.After(backgroundRetryDelay):
				}
			}
		}
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
	if err := me.wal.Close(); err != nil {
		d.opts.Logger.Warn("lsm: closing WAL segment failed", "file", wal.SegmentName(me.logNum), "err", err)
	}
	edit := &manifest.VersionEdit{}
	var newTables []*table
	var meta *manifest.TableMeta
	if !me.mem.Empty() {
		var err error
		if meta, err = d.writeL0(me.mem); err != nil {
			return err
		}
		t, err := d.openTable(meta)
		if err != nil {
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
	err := d.logAndApply(edit, newTables, func() {
		d.mu.imm = d.mu.imm[1:]
		if len(d.mu.recycle) < maxRecycledLogs {
			d.mu.recycle = append(d.mu.recycle, me.logNum)
		} else {
			removeLog = true
		}
		d.signalBackgroundDoneLocked()
	})
	if err != nil {
		for _, t := range newTables {
			t.reader.Close()
		}
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

// limitedWritable throttles compaction output through the DB's limiter.
type limitedWritable struct {
	objstorage.Writable
	d *DB
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
		if err := w.Writable.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}
