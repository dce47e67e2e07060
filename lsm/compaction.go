package lsm

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/internal/blob"
	"github.com/tierkv/tierkv/lsm/internal/manifest"
	"github.com/tierkv/tierkv/lsm/objstorage"
)

// compaction is a picked set of input tables and where their merge goes.
type compaction struct {
	reason      string
	outputLevel int
	// inputs are the tables to merge, each with its level.
	inputs []compactionInput
	// split cuts output tables at TargetFileSize (leveled).
	split bool
}

type compactionInput struct {
	level int
	t     *table
}

func (d *DB) maybeScheduleCompaction() {
	select {
	case d.compactCh <- struct{}{}:
	default:
	}
}

func (d *DB) closingCtx() context.Context { return d.ctx }

func (d *DB) compactLoop() {
	defer d.wg.Done()
	for {
		select {
		case <-d.closing:
			return
		case <-d.compactCh:
		}
		for {
			d.mu.Lock()
			if d.mu.closed || d.mu.compacting || d.opts.DisableAutomaticCompactions {
				d.mu.Unlock()
				break
			}
			c := d.pickCompactionLocked(d.mu.current)
			if c == nil {
				d.mu.Unlock()
				break
			}
			d.mu.compacting = true
			d.mu.Unlock()
			err := d.runCompaction(c)
			d.mu.Lock()
			d.mu.compacting = false
			d.signalBackgroundDoneLocked()
			d.mu.Unlock()
			if err != nil && !d.backOff(err) {
				return
			}
		}
	}
}

// levelMaxBytes is the target size of level l >= 1 (leveled).
func (d *DB) levelMaxBytes(l int) float64 {
	s := float64(d.opts.LBaseMaxBytes)
	for i := 1; i < l; i++ {
		s *= float64(d.opts.LevelMultiplier)
	}
	return s
}

// pickCompactionLocked returns the most urgent compaction of v, or nil.
// REQUIRES: d.mu held.
func (d *DB) pickCompactionLocked(v *version) *compaction {
	var c *compaction
	if d.opts.CompactionStrategy == SizeTiered {
		c = d.pickSizeTiered(v)
	} else {
		c = d.pickLeveled(v)
	}
	if c == nil {
		c = d.pickBlobRewrite(v)
	}
	return c
}

// garbageBlobs returns the blob files of v whose unreferenced fraction
// exceeds BlobGarbageRatio.
func (d *DB) garbageBlobs(v *version) map[base.FileNum]bool {
	out := map[base.FileNum]bool{}
	live := v.v.BlobLiveBytes()
	for _, b := range v.v.Blobs {
		if b.ValueBytes > 0 && 1-float64(live[b.FileNum])/float64(b.ValueBytes) > d.opts.BlobGarbageRatio {
			out[b.FileNum] = true
		}
	}
	return out
}

// pickBlobRewrite returns a compaction that rewrites, in place, one table
// referencing a blob file that is mostly garbage; it copies the live values
// out so that the file can be deleted. Repeated picks drain the file.
func (d *DB) pickBlobRewrite(v *version) *compaction {
	garbage := d.garbageBlobs(v)
	if len(garbage) == 0 {
		return nil
	}
	for l, lt := range v.tables {
		for _, t := range lt {
			for _, r := range t.meta.BlobRefs {
				if garbage[r.FileNum] {
					return &compaction{reason: fmt.Sprintf("blob file %s is mostly garbage", r.FileNum), outputLevel: l,
						split: d.opts.CompactionStrategy == Leveled, inputs: []compactionInput{{l, t}}}
				}
			}
		}
	}
	return nil
}

func (d *DB) pickLeveled(v *version) *compaction {
	bestLevel, bestScore := -1, 1.0
	if s := float64(len(v.tables[0])) / float64(d.opts.L0CompactionThreshold); s >= bestScore {
		bestLevel, bestScore = 0, s
	}
	for l := 1; l < manifest.NumLevels-1; l++ {
		if s := float64(v.v.LevelSize(l)) / d.levelMaxBytes(l); s > bestScore {
			bestLevel, bestScore = l, s
		}
	}
	if bestLevel < 0 {
		return nil
	}
	c := &compaction{outputLevel: bestLevel + 1, split: true}
	var lo, hi []byte
	if bestLevel == 0 {
		c.reason = fmt.Sprintf("L0 holds %d tables", len(v.tables[0]))
		for _, t := range v.tables[0] {
			c.inputs = append(c.inputs, compactionInput{0, t})
			lo, hi = widen(lo, hi, t.meta)
		}
	} else {
		c.reason = fmt.Sprintf("L%d is %.1fx its target size", bestLevel, bestScore)
		lt := v.tables[bestLevel]
		ptr := d.mu.compactPointer[bestLevel]
		i := sort.Search(len(lt), func(i int) bool { return bytes.Compare(lt[i].meta.Smallest, ptr) > 0 })
		if ptr == nil || i == len(lt) {
			i = 0
		}
		t := lt[i]
		d.mu.compactPointer[bestLevel] = t.meta.Largest
		c.inputs = append(c.inputs, compactionInput{bestLevel, t})
		lo, hi = widen(lo, hi, t.meta)
	}
	for _, t := range v.tables[c.outputLevel] {
		if bytes.Compare(t.meta.Largest, lo) >= 0 && bytes.Compare(t.meta.Smallest, hi) <= 0 {
			c.inputs = append(c.inputs, compactionInput{c.outputLevel, t})
		}
	}
	return c
}

func widen(lo, hi []byte, m *manifest.TableMeta) ([]byte, []byte) {
	if lo == nil || bytes.Compare(m.Smallest, lo) < 0 {
		lo = m.Smallest
	}
	if hi == nil || bytes.Compare(m.Largest, hi) > 0 {
		hi = m.Largest
	}
	return lo, hi
}

// pickSizeTiered groups L0 tables into buckets of similar size and merges
// the bucket of smallest tables that has at least SizeTieredMinThreshold.
func (d *DB) pickSizeTiered(v *version) *compaction {
	tables := slices.Clone(v.tables[0])
	slices.SortFunc(tables, func(a, b *table) int { return int(int64(a.meta.Size) - int64(b.meta.Size)) })
	var bucket []*table
	var sum float64
	flush := func() *compaction {
		if len(bucket) < d.opts.SizeTieredMinThreshold {
			return nil
		}
		n := min(len(bucket), d.opts.SizeTieredMaxThreshold)
		c := &compaction{reason: fmt.Sprintf("%d tables of about %d bytes", n, int64(sum)/int64(len(bucket)))}
		for _, t := range bucket[:n] {
			c.inputs = append(c.inputs, compactionInput{0, t})
		}
		return c
	}
	for _, t := range tables {
		size := float64(t.meta.Size)
		if len(bucket) > 0 {
			mean := sum / float64(len(bucket))
			small := int64(t.meta.Size) < d.opts.SizeTieredMinTableSize && int64(mean) < d.opts.SizeTieredMinTableSize
			if !small && (size < d.opts.SizeTieredBucketLow*mean || size > d.opts.SizeTieredBucketHigh*mean) {
				if c := flush(); c != nil {
					return c
				}
				bucket, sum = nil, 0
			}
		}
		bucket = append(bucket, t)
		sum += size
	}
	return flush()
}

// Compact flushes the memtables and merges every table into one sorted run
// (the last level under leveled compaction, one table under size-tiered),
// purging shadowed versions and tombstones past their grace period.
func (d *DB) Compact() error {
	if err := d.Flush(); err != nil {
		return err
	}
	d.mu.Lock()
	for d.mu.compacting && !d.mu.closed {
		done := d.mu.bgDone
		d.mu.Unlock()
		<-done
		d.mu.Lock()
	}
	if d.mu.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	c := &compaction{reason: "manual", outputLevel: manifest.NumLevels - 1, split: true}
	if d.opts.CompactionStrategy == SizeTiered {
		c.outputLevel, c.split = 0, false
	}
	for l, lt := range d.mu.current.tables {
		for _, t := range lt {
			c.inputs = append(c.inputs, compactionInput{l, t})
		}
	}
	if len(c.inputs) == 0 {
		d.mu.Unlock()
		return nil
	}
	d.mu.compacting = true
	d.mu.Unlock()
	err := d.runCompaction(c)
	// The merge dropped shadowed references; blob files it left mostly
	// garbage are rewritten now rather than by later compactions.
	for err == nil {
		d.mu.Lock()
		c := d.pickBlobRewrite(d.mu.current)
		d.mu.Unlock()
		if c == nil {
			break
		}
		err = d.runCompaction(c)
	}
	d.mu.Lock()
	d.mu.compacting = false
	d.signalBackgroundDoneLocked()
	d.mu.Unlock()
	d.maybeScheduleCompaction()
	return err
}

// WaitForCompactions returns when no flush or compaction is running or
// needed (with automatic compactions disabled: when none is running).
func (d *DB) WaitForCompactions() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		if d.mu.closed {
			return ErrClosed
		}
		if d.mu.bgErr != nil {
			return d.mu.bgErr
		}
		idle := !d.mu.compacting && len(d.mu.imm) == 0 &&
			(d.opts.DisableAutomaticCompactions || d.pickCompactionLocked(d.mu.current) == nil)
		if idle {
			return nil
		}
		d.maybeScheduleCompaction()
		done := d.mu.bgDone
		d.mu.Unlock()
		<-done
		d.mu.Lock()
	}
}

// runCompaction merges c's inputs and installs the result.
func (d *DB) runCompaction(c *compaction) error {
	start := d.opts.Clock.Now()
	edit := &manifest.VersionEdit{}
	info := CompactionInfo{Reason: c.reason, OutputLevel: c.outputLevel}
	inputSet := map[*table]bool{}
	var bytesIn uint64
	for _, in := range c.inputs {
		edit.Deleted = append(edit.Deleted, manifest.DeletedTable{Level: in.level, FileNum: in.t.meta.FileNum})
		inputSet[in.t] = true
		bytesIn += in.t.meta.Size
		info.Inputs = append(info.Inputs, in.t.info(in.level))
	}

	// A single table with nothing to merge moves down without a rewrite
	// unless it holds tombstones that might be purged.
	if len(c.inputs) == 1 && c.inputs[0].level != c.outputLevel && c.inputs[0].t.meta.NumTombstones == 0 {
		t := c.inputs[0].t
		edit.Added = append(edit.Added, manifest.NewTable{Level: c.outputLevel, Meta: t.meta})
		if err := d.logAndApply(edit, nil, nil, nil); err != nil {
			return err
		}
		info.Outputs = []TableInfo{t.info(c.outputLevel)}
		d.finishCompaction(info, start, nil)
		return nil
	}

	rs, err := d.loadReadState()
	if err != nil {
		return err
	}
	defer rs.unref(d)
	purgeable := func(e *base.Entry) bool {
		if d.opts.Clock.Now().Sub(d.opts.VersionTime(e.Version)) < d.opts.TombstoneGracePeriod {
			return false
		}
		// Any table or memtable outside the compaction that may hold an
		// older version of the key would resurrect it.
		for _, lt := range rs.v.tables {
			for _, t := range lt {
				if inputSet[t] || t.meta.MinVersion > e.Version ||
					bytes.Compare(e.Key, t.meta.Smallest) < 0 || bytes.Compare(e.Key, t.meta.Largest) > 0 {
					continue
				}
				if t.reader.MayContain(e.Key) {
					return false
				}
			}
		}
		for _, me := range rs.mems {
			if lo, _ := me.mem.VersionRange(); lo <= e.Version {
				if _, ok := me.mem.Get(e.Key); ok {
					return false
				}
			}
		}
		return true
	}

	// Values in blob files that are mostly garbage are copied into this
	// compaction's blob file, so that the old file can go once no table
	// references it.
	rewrite := d.garbageBlobs(rs.v)
	sep := &separator{d: d, limited: true}
	var valueBuf []byte // the value being copied

	var iters []base.InternalIterator
	for _, in := range c.inputs {
		iters = append(iters, in.t.reader.NewCompactionIter(bgCtx))
	}
	merge := newMergingIter(iters)
	var outputs []*tableOutput
	var metas []*manifest.TableMeta
	var blobMeta *manifest.BlobMeta
	abort := func() {
		for _, o := range outputs[len(metas):] {
			o.w.Abort()
		}
		for _, m := range metas {
			_ = d.provider.Remove(objstorage.FileTypeTable, uint64(m.FileNum))
		}
		if sep.out != nil && blobMeta == nil {
			sep.out.w.Abort()
		}
		if blobMeta != nil {
			_ = d.provider.Remove(objstorage.FileTypeBlob, uint64(blobMeta.FileNum))
		}
	}
	var cur *tableOutput
	for ok := merge.First(); ok; ok = merge.Next() {
		e := merge.Entry()
		if e.Kind == base.KindDelete && purgeable(&e) {
			info.TombstonesPurged++
			continue
		}
		if e.Kind == base.KindValueRef {
			ref, err := blob.DecodeRef(e.Value)
			if err != nil {
				merge.Close()
				abort()
				return fmt.Errorf("lsm: compaction input: key %q: %w", e.Key, err)
			}
			if rewrite[ref.FileNum] {
				// NB: sep.add copies the value before the next read
				// reuses valueBuf.
				if e, err = rs.v.resolveOnce(e, valueBuf); err != nil {
					merge.Close()
					abort()
					return fmt.Errorf("lsm: compaction input: %w", err)
				}
				valueBuf = e.Value[:0]
				info.BlobBytesRewritten += ref.Length
			}
		}
		if cur != nil && c.split && int64(cur.w.EstimatedSize()) >= d.opts.TargetFileSize {
			m, err := cur.finish(d)
			if err != nil {
				merge.Close()
				abort()
				return err
			}
			metas = append(metas, m)
			cur = nil
		}
		if cur == nil {
			if cur, err = d.newTableOutput(true); err != nil {
				merge.Close()
				abort()
				return err
			}
			outputs = append(outputs, cur)
		}
		if err := sep.add(cur, e); err != nil {
			merge.Close()
			abort()
			return fmt.Errorf("lsm: compaction output %s: %w", cur.num, err)
		}
	}
	if err := merge.Close(); err != nil {
		abort()
		return fmt.Errorf("lsm: compaction input: %w", err)
	}
	if cur != nil {
		m, err := cur.finish(d)
		if err != nil {
			abort()
			return err
		}
		metas = append(metas, m)
	}
	var newBlobs []*blobFile
	if sep.out != nil {
		if blobMeta, err = sep.out.finish(d); err != nil {
			abort()
			return err
		}
		b, err := d.openBlob(blobMeta)
		if err != nil {
			abort()
			return err
		}
		newBlobs = append(newBlobs, b)
		edit.AddedBlobs = append(edit.AddedBlobs, blobMeta)
	}
	var newTables []*table
	for _, m := range metas {
		t, err := d.openTable(m)
		if err != nil {
			closeAll(newTables, newBlobs)
			abort()
			return err
		}
		newTables = append(newTables, t)
		edit.Added = append(edit.Added, manifest.NewTable{Level: c.outputLevel, Meta: m})
	}
	if err := d.logAndApply(edit, newTables, newBlobs, nil); err != nil {
		closeAll(newTables, newBlobs)
		abort()
		return err
	}
	var bytesOut uint64
	for _, t := range newTables {
		bytesOut += t.meta.Size
		info.Outputs = append(info.Outputs, t.info(c.outputLevel))
	}
	if blobMeta != nil {
		bytesOut += blobMeta.Size
		if f := d.opts.EventListener.BlobCreated; f != nil {
			f(newBlobs[0].info(blobMeta.ValueBytes))
		}
	}
	d.m.compactBytesIn.Add(bytesIn)
	d.m.compactBytesOut.Add(bytesOut)
	d.m.tombstonesPurge.Add(info.TombstonesPurged)
	d.finishCompaction(info, start, info.Outputs)
	return nil
}

func (d *DB) finishCompaction(info CompactionInfo, start time.Time, created []TableInfo) {
	d.m.compactions.Add(1)
	d.m.blobRewritten.Add(info.BlobBytesRewritten)
	info.Duration = d.opts.Clock.Now().Sub(start)
	if f := d.opts.EventListener.TableCreated; f != nil {
		for _, ti := range created {
			f(ti)
		}
	}
	if f := d.opts.EventListener.CompactionEnd; f != nil {
		f(info)
	}
}
