package lsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/internal/blob"
	"github.com/tierkv/tierkv/lsm/internal/cache"
	"github.com/tierkv/tierkv/lsm/internal/manifest"
	"github.com/tierkv/tierkv/lsm/internal/memtable"
	"github.com/tierkv/tierkv/lsm/internal/sstable"
	"github.com/tierkv/tierkv/lsm/internal/wal"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// WriteOptions control a write.
type WriteOptions struct {
	// Sync makes the write durable (its WAL record fsync'd, shared with
	// concurrent writers by group commit) before the write returns.
	Sync bool
}

var (
	// Sync is the WriteOptions of a durable write (the default).
	Sync = &WriteOptions{Sync: true}
	// NoSync is the WriteOptions of a write that returns once it is in the
	// WAL buffer; a crash may lose it.
	NoSync = &WriteOptions{Sync: false}
)

// DB is an open engine. It is safe for concurrent use.
type DB struct {
	dirname  string
	opts     *Options
	fs       vfs.FS
	provider objstorage.Provider
	cache    *cache.Cache
	lock     io.Closer
	limiter  *rate.Limiter
	gc       *gcPacer

	tableStats sstable.Stats
	m          counters

	// manifestMu serializes version changes (logAndApply) and guards the
	// manifest writer. Lock order: manifestMu before mu.
	manifestMu sync.Mutex
	manifest   struct {
		w    *wal.Writer
		num  base.FileNum
		size int64
	}

	// mu guards the fields below. Held only briefly: no I/O under it except
	// the creation of a WAL segment at memtable rotation.
	mu struct {
		sync.Mutex
		// mem is the mutable memtable; imm are sealed memtables waiting
		// to flush, oldest first.
		mem *memEntry
		imm []*memEntry
		// current is the installed version; it holds one reference.
		current *version
		// readState is what new reads use; see updateReadStateLocked.
		readState *readState
		// nextFileNum is the next unused file number.
		nextFileNum base.FileNum
		// recycle holds obsolete WAL segments kept for reuse.
		recycle []base.FileNum
		// bgDone is closed (and replaced) whenever a flush or compaction
		// finishes, waking stalled writers and waiters.
		bgDone     chan struct{}
		compacting bool
		// compactPointer is, per level, the largest key of the last table
		// compacted out of it (round-robin picking).
		compactPointer [manifest.NumLevels][]byte
		bgErr          error
		closed         bool
	}

	flushCh   chan struct{}
	compactCh chan struct{}
	closing   chan struct{}
	// ctx is cancelled by Close; throttled compaction writes wait on it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// memEntry is a memtable with its WAL segment.
type memEntry struct {
	mem    *memtable.Memtable
	wal    *wal.Writer
	logNum base.FileNum
	// writers counts writes that reserved this memtable and have not
	// applied to it yet. INVARIANT: Add happens only under DB.mu while the
	// entry is the mutable memtable, so Wait after sealing is safe.
	writers sync.WaitGroup
}

type counters struct {
	userBytes       atomic.Uint64
	flushBytes      atomic.Uint64
	compactBytesIn  atomic.Uint64
	compactBytesOut atomic.Uint64
	flushes         atomic.Uint64
	compactions     atomic.Uint64
	stalls          atomic.Uint64
	stallNanos      atomic.Int64
	stallFailures   atomic.Uint64
	tombstonesPurge atomic.Uint64
	walSyncs        atomic.Uint64 // from closed WAL segments
	walRecords      atomic.Uint64
	walBytes        atomic.Uint64
	blobRewritten   atomic.Uint64
}

const (
	currentName  = "CURRENT"
	lockName     = "LOCK"
	manifestPref = "MANIFEST-"
	// maxManifestSize is the size at which the manifest is rewritten as a
	// snapshot into a new file.
	maxManifestSize = 8 << 20
)

func manifestName(num base.FileNum) string { return manifestPref + num.String() }

// Open opens or creates the DB in dirname. opts may be nil; Open calls
// EnsureDefaults and Validate on it and keeps it: do not change it later.
func Open(dirname string, opts *Options) (_ *DB, err error) {
	opts = opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	d := &DB{
		dirname:   dirname,
		opts:      opts,
		fs:        opts.FS,
		flushCh:   make(chan struct{}, 1),
		compactCh: make(chan struct{}, 1),
		closing:   make(chan struct{}),
	}
	d.mu.bgDone = make(chan struct{})
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if opts.BlockCacheSize > 0 {
		d.cache = cache.New(opts.BlockCacheSize)
	} else {
		d.cache = cache.New(0)
	}
	limit := rate.Inf
	if opts.CompactionRate > 0 {
		limit = rate.Limit(opts.CompactionRate)
	}
	d.limiter = rate.NewLimiter(limit, compactionBurst)
	d.gc = newGCPacer(d)

	if err := d.fs.MkdirAll(dirname, 0o755); err != nil {
		return nil, fmt.Errorf("lsm: create %s: %w", dirname, err)
	}
	lock, err := d.fs.Lock(d.fs.PathJoin(dirname, lockName))
	if err != nil {
		return nil, fmt.Errorf("lsm: %w", err)
	}
	d.lock = lock
	defer func() {
		if err != nil {
			d.closeAfterFailedOpen()
		}
	}()
	d.provider = opts.Provider
	if d.provider == nil {
		d.provider = objstorage.NewLocal(d.fs, dirname)
	}
	if err := d.recover(); err != nil {
		return nil, err
	}
	d.wg.Add(2)
	go d.flushLoop()
	go d.compactLoop()
	d.maybeScheduleCompaction()
	return d, nil
}

func (d *DB) closeAfterFailedOpen() {
	d.cancel()
	if d.mu.readState != nil {
		d.mu.readState.unref(d)
	}
	if d.mu.mem != nil && d.mu.mem.wal != nil {
		d.mu.mem.wal.Close()
	}
	if d.manifest.w != nil {
		d.manifest.w.Close()
	}
	if d.mu.current != nil {
		d.mu.current.unref(d)
	}
	if d.lock != nil {
		d.lock.Close()
	}
}

func (d *DB) path(name string) string { return d.fs.PathJoin(d.dirname, name) }

// recover loads the manifest, opens the tables, replays the WAL into tables,
// and writes a fresh manifest that makes the replayed WAL obsolete.
func (d *DB) recover() error {
	v := &manifest.Version{}
	var logNum, nextFileNum base.FileNum = 0, 1
	var oldManifest base.FileNum
	cur, err := readFile(d.fs, d.path(currentName))
	switch {
	case errors.Is(err, os.ErrNotExist):
		// A new DB.
	case err != nil:
		return fmt.Errorf("lsm: read %s: %w", currentName, err)
	default:
		name := strings.TrimSpace(string(cur))
		num, ok := parseManifestName(name)
		if !ok {
			return base.CorruptionErrorf("%s names %q, not a manifest", d.path(currentName), name)
		}
		oldManifest = num
		_, err := wal.Replay(d.fs, d.path(name), num, d.opts.Logger, func(payload []byte, off int64) error {
			e, err := manifest.Decode(payload)
			if err != nil {
				return fmt.Errorf("%s at offset %d: %w", d.path(name), off, err)
			}
			if v, err = v.Apply(e); err != nil {
				return fmt.Errorf("%s at offset %d: %w", d.path(name), off, err)
			}
			logNum = max(logNum, e.LogNum)
			nextFileNum = max(nextFileNum, e.NextFileNum)
			return nil
		})
		if err != nil {
			return fmt.Errorf("lsm: replay manifest: %w", err)
		}
		nextFileNum = max(nextFileNum, num+1)
	}
	d.mu.nextFileNum = nextFileNum

	// Open every table and blob file of the version.
	tables := map[base.FileNum]*table{}
	blobs := map[base.FileNum]*blobFile{}
	closeOpened := func() {
		for _, t := range tables {
			t.reader.Close()
		}
		for _, b := range blobs {
			b.reader.Close()
		}
	}
	for l := range v.Levels {
		for _, m := range v.Levels[l] {
			t, err := d.openTable(m)
			if err != nil {
				closeOpened()
				return err
			}
			tables[m.FileNum] = t
		}
	}
	for _, m := range v.Blobs {
		b, err := d.openBlob(m)
		if err != nil {
			closeOpened()
			return err
		}
		blobs[m.FileNum] = b
	}
	d.mu.current = newVersion(v, tables, blobs)

	// Replay WAL segments at or after logNum, in order, flushing to L0. A
	// segment may already carry its blob name if a crash came between its
	// rename and the manifest edit of its flush.
	names, err := d.fs.List(d.dirname)
	if err != nil {
		return fmt.Errorf("lsm: list %s: %w", d.dirname, err)
	}
	inVersion := map[base.FileNum]bool{}
	for _, b := range v.Blobs {
		inVersion[b.FileNum] = true
	}
	segPath := map[base.FileNum]string{}
	var logs []base.FileNum
	for _, n := range names {
		num, ok := wal.ParseSegmentName(n)
		if !ok {
			if bn, isBlob := parseBlobName(n); isBlob && bn >= logNum && !inVersion[bn] && !d.hasBlobFooter(bn) {
				num, ok = bn, true
			}
		}
		if !ok {
			continue
		}
		d.mu.nextFileNum = max(d.mu.nextFileNum, num+1)
		if num >= logNum {
			logs = append(logs, num)
			segPath[num] = d.path(n)
		} else {
			d.mu.recycle = append(d.mu.recycle, num)
		}
	}
	slices.Sort(logs)
	edit := &manifest.VersionEdit{}
	referenced := map[base.FileNum]bool{}
	mem := memtable.New()
	flushMem := func() error {
		if mem.Empty() {
			return nil
		}
		meta, bm, segs, err := d.writeL0(mem, true)
		if err != nil {
			return err
		}
		edit.Added = append(edit.Added, manifest.NewTable{Level: 0, Meta: meta})
		if bm != nil {
			edit.AddedBlobs = append(edit.AddedBlobs, bm)
		}
		for n := range segs {
			referenced[n] = true
		}
		mem = memtable.New()
		return nil
	}
	validSize := map[base.FileNum]int64{}
	for _, num := range logs {
		path := segPath[num]
		res, err := wal.Replay(d.fs, path, num, d.opts.Logger, func(payload []byte, off int64) error {
			entries, locs := d.decodeForMemtableChecked(payload, num, off+wal.RecordHeaderSize)
			if entries == nil {
				return fmt.Errorf("%s at offset %d: %w", path, off, base.CorruptionErrorf("bad batch"))
			}
			mem.AddBatch(entries, locs)
			if mem.Size() >= d.opts.MemTableSize {
				return flushMem()
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("lsm: replay WAL: %w", err)
		}
		if res.TornTail {
			d.opts.Logger.Warn("lsm: truncated torn WAL tail", "file", path, "offset", res.ValidSize, "bytes", res.TruncatedBytes)
		}
		validSize[num] = res.ValidSize
	}
	if err := flushMem(); err != nil {
		return err
	}
	// Replayed segments whose values the new tables reference become blob
	// files; the others are obsolete.
	for _, num := range logs {
		if !referenced[num] {
			if strings.HasSuffix(segPath[num], ".blob") {
				_ = d.fs.Remove(segPath[num])
			} else {
				d.mu.recycle = append(d.mu.recycle, num)
			}
			continue
		}
		bm, err := d.segmentToBlob(num, segPath[num], validSize[num])
		if err != nil {
			return err
		}
		edit.AddedBlobs = append(edit.AddedBlobs, bm)
	}

	// Start the mutable memtable on a new segment, then write a new
	// manifest that says every replayed segment is obsolete.
	newLog := d.allocFileNumLocked()
	w, err := d.createWAL(newLog)
	if err != nil {
		return err
	}
	d.mu.mem = &memEntry{mem: memtable.New(), wal: w, logNum: newLog}
	edit.LogNum = newLog
	nv, err := v.Apply(edit)
	if err != nil {
		return err
	}
	for _, a := range edit.Added {
		t, err := d.openTable(a.Meta)
		if err != nil {
			return err
		}
		tables[a.Meta.FileNum] = t
	}
	for _, m := range edit.AddedBlobs {
		b, err := d.openBlob(m)
		if err != nil {
			return err
		}
		blobs[m.FileNum] = b
	}
	old := d.mu.current
	d.mu.current = newVersion(nv, tables, blobs)
	old.unref(d)
	d.updateReadStateLocked()
	if err := d.rotateManifest(nv, newLog); err != nil {
		return err
	}
	if oldManifest != 0 {
		_ = d.fs.Remove(d.path(manifestName(oldManifest)))
	}
	if names, err = d.fs.List(d.dirname); err != nil {
		return fmt.Errorf("lsm: list %s: %w", d.dirname, err)
	}
	d.removeObsoleteFiles(names, nv)
	return nil
}

// decodeForMemtableChecked is decodeForMemtable for bytes read back from
// disk: it returns nil entries if the batch does not decode.
func (d *DB) decodeForMemtableChecked(repr []byte, num base.FileNum, payloadOff int64) ([]base.Entry, []memtable.Loc) {
	n := 0
	if err := decodeBatch(repr, func(base.Entry, int) error { n++; return nil }); err != nil {
		return nil, nil
	}
	entries, locs := d.decodeForMemtable(repr, num, payloadOff, n)
	if entries == nil {
		entries = []base.Entry{}
	}
	return entries, locs
}

func parseBlobName(name string) (base.FileNum, bool) {
	s, ok := strings.CutSuffix(name, ".blob")
	if !ok {
		return 0, false
	}
	return parseFileNum(s)
}

// hasBlobFooter reports whether the named file ends in a valid blob footer
// (a blob file written by a flush or compaction, as opposed to a former WAL
// segment).
func (d *DB) hasBlobFooter(num base.FileNum) bool {
	r, err := d.provider.Open(bgCtx, objstorage.FileTypeBlob, uint64(num))
	if err != nil {
		return false
	}
	defer r.Close()
	_, err = blob.Open(bgCtx, r, num.String())
	return err == nil
}

// segmentToBlob turns a flushed WAL segment whose values tables reference
// into a blob file: it trims the segment to its valid size (dropping
// preallocated or recycled bytes past its last record), syncs it, and
// renames it to the blob name. REQUIRES: the segment's writer is closed.
//
// It is idempotent: a retry after a failure past the rename finds the file
// under its blob name.
func (d *DB) segmentToBlob(num base.FileNum, path string, size int64) (*manifest.BlobMeta, error) {
	blobPath := d.path(objstorage.ObjectName(objstorage.FileTypeBlob, uint64(num)))
	f, err := d.fs.OpenReadWrite(path)
	if errors.Is(err, os.ErrNotExist) && path != blobPath {
		path = blobPath
		f, err = d.fs.OpenReadWrite(path)
	}
	if err != nil {
		return nil, fmt.Errorf("lsm: open segment %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("lsm: trim segment %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("lsm: sync segment %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if path != blobPath {
		if err := d.fs.Rename(path, blobPath); err != nil {
			return nil, fmt.Errorf("lsm: rename segment %s: %w", path, err)
		}
		if err := vfs.SyncDir(d.fs, d.dirname); err != nil {
			return nil, err
		}
	}
	return &manifest.BlobMeta{FileNum: num, Size: uint64(size), ValueBytes: uint64(size), Segment: true,
		CreatedUnixMilli: d.opts.Clock.Now().UnixMilli()}, nil
}

// removeObsoleteFiles deletes leftovers of a crash: tables not in v,
// temporary files, old manifests, and WAL segments beyond the recycling
// allowance.
func (d *DB) removeObsoleteFiles(names []string, v *manifest.Version) {
	live := map[uint64]bool{}
	for l := range v.Levels {
		for _, m := range v.Levels[l] {
			live[uint64(m.FileNum)] = true
		}
	}
	for _, b := range v.Blobs {
		live[uint64(b.FileNum)] = true
	}
	for _, typ := range []objstorage.FileType{objstorage.FileTypeTable, objstorage.FileTypeBlob} {
		nums, err := d.provider.List(typ)
		if err != nil {
			continue
		}
		for _, n := range nums {
			if !live[n] {
				d.opts.Logger.Info("lsm: removing obsolete file", "file", objstorage.ObjectName(typ, n))
				_ = d.provider.Remove(typ, n)
			}
		}
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".tmp") {
			_ = d.fs.Remove(d.path(n))
		}
		if num, ok := parseManifestName(n); ok && num != d.manifest.num {
			_ = d.fs.Remove(d.path(n))
		}
	}
	slices.Sort(d.mu.recycle)
	for len(d.mu.recycle) > maxRecycledLogs {
		_ = d.fs.Remove(d.path(wal.SegmentName(d.mu.recycle[0])))
		d.mu.recycle = d.mu.recycle[1:]
	}
}

// maxRecycledLogs is how many obsolete WAL segments are kept for reuse:
// overwriting a preallocated segment with fdatasync is much cheaper than
// extending a new file.
const maxRecycledLogs = 2

func parseManifestName(name string) (base.FileNum, bool) {
	s, ok := strings.CutPrefix(name, manifestPref)
	if !ok {
		return 0, false
	}
	return parseFileNum(s)
}

// parseFileNum parses the decimal file number of a file name.
func parseFileNum(s string) (base.FileNum, bool) {
	if s == "" {
		return 0, false
	}
	var n uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return base.FileNum(n), true
}

func readFile(fs vfs.FS, name string) ([]byte, error) {
	f, err := fs.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func (d *DB) allocFileNumLocked() base.FileNum {
	n := d.mu.nextFileNum
	d.mu.nextFileNum++
	return n
}

func (d *DB) walOptions() wal.Options {
	return wal.Options{
		FS:              d.fs,
		Dir:             d.dirname,
		PreallocateSize: d.opts.WALPreallocateSize,
		MaxPendingBytes: d.opts.WALMaxPendingBytes,
		Logger:          d.opts.Logger,
		OnSync:          d.opts.EventListener.WALSync,
	}
}

// createWAL creates segment num, reusing an obsolete segment if one is kept.
// REQUIRES: d.mu held or Open in progress.
func (d *DB) createWAL(num base.FileNum) (*wal.Writer, error) {
	if len(d.mu.recycle) > 0 {
		old := d.mu.recycle[len(d.mu.recycle)-1]
		d.mu.recycle = d.mu.recycle[:len(d.mu.recycle)-1]
		w, err := wal.CreateRecycled(d.walOptions(), num, old)
		if err == nil {
			return w, nil
		}
		d.opts.Logger.Warn("lsm: recycling WAL segment failed; creating a new one", "old", wal.SegmentName(old), "err", err)
	}
	w, err := wal.Create(d.walOptions(), num)
	if err != nil {
		return nil, fmt.Errorf("lsm: create WAL %s: %w", wal.SegmentName(num), err)
	}
	return w, nil
}

// rotateManifest writes a new manifest holding a snapshot of v and points
// CURRENT at it. REQUIRES: manifestMu held or Open in progress.
func (d *DB) rotateManifest(v *manifest.Version, logNum base.FileNum) error {
	d.mu.Lock()
	num := d.allocFileNumLocked()
	next := d.mu.nextFileNum
	d.mu.Unlock()
	mo := d.walOptions()
	mo.PreallocateSize = 1 << 20 // edits are small; the manifest is rewritten at maxManifestSize
	w, err := wal.CreateAt(mo, d.path(manifestName(num)), num)
	if err != nil {
		return fmt.Errorf("lsm: create manifest: %w", err)
	}
	snap := v.Snapshot()
	snap.LogNum = logNum
	snap.NextFileNum = next
	payload := snap.Encode(nil)
	if err := w.Append(payload, true); err != nil {
		w.Close()
		return fmt.Errorf("lsm: write manifest: %w", err)
	}
	if err := vfs.WriteFileAtomic(d.fs, d.path(currentName), []byte(manifestName(num)+"\n")); err != nil {
		w.Close()
		return fmt.Errorf("lsm: write %s: %w", currentName, err)
	}
	old := d.manifest
	d.manifest.w, d.manifest.num, d.manifest.size = w, num, int64(len(payload))
	if old.w != nil {
		old.w.Close()
		_ = d.fs.Remove(d.path(manifestName(old.num)))
	}
	return nil
}

// logAndApply makes edit durable in the manifest and installs the resulting
// version. install, if not nil, runs under d.mu in the same critical section
// as the version switch (a flush uses it to retire its memtable, so that a
// reader sees the data either in the memtable or in the table, never in
// neither).
func (d *DB) logAndApply(edit *manifest.VersionEdit, newTables []*table, newBlobs []*blobFile, install func()) error {
	d.manifestMu.Lock()
	defer d.manifestMu.Unlock()
	d.mu.Lock()
	cur := d.mu.current
	cur.ref()
	edit.NextFileNum = d.mu.nextFileNum
	d.mu.Unlock()
	defer cur.unref(d)

	nv, err := cur.v.Apply(edit)
	if err != nil {
		return err
	}
	// Blob files that no table references any more leave with this edit.
	if dead := nv.UnreferencedBlobs(); len(dead) > 0 {
		edit.DeletedBlobs = append(edit.DeletedBlobs, dead...)
		if nv, err = cur.v.Apply(edit); err != nil {
			return err
		}
	}
	if d.opts.CompactionStrategy == Leveled {
		if err := nv.CheckOrdering(); err != nil {
			return fmt.Errorf("lsm: internal error: %w", err)
		}
	}
	payload := edit.Encode(nil)
	if err := d.manifest.w.Append(payload, true); err != nil {
		// The manifest's state on disk is unknown and its writer is
		// failed for good: stop, as after a failed WAL sync.
		err = fmt.Errorf("lsm: write manifest: %w", err)
		d.setBackgroundError(err)
		return err
	}
	d.manifest.size += int64(len(payload))

	tables := make(map[base.FileNum]*table, nv.NumTables())
	for _, lt := range cur.tables {
		for _, t := range lt {
			tables[t.meta.FileNum] = t
		}
	}
	for _, t := range newTables {
		tables[t.meta.FileNum] = t
	}
	for _, del := range edit.Deleted {
		// A table deleted from one level and added to another (a trivial
		// move) keeps its file.
		if !slices.ContainsFunc(edit.Added, func(a manifest.NewTable) bool { return a.Meta.FileNum == del.FileNum }) {
			tables[del.FileNum].obsolete.Store(true)
		}
	}
	blobs := make(map[base.FileNum]*blobFile, len(nv.Blobs))
	for n, b := range cur.blobs {
		blobs[n] = b
	}
	for _, b := range newBlobs {
		blobs[b.meta.FileNum] = b
	}
	for _, n := range edit.DeletedBlobs {
		blobs[n].obsolete.Store(true)
	}
	next := newVersion(nv, tables, blobs)
	d.mu.Lock()
	old := d.mu.current
	d.mu.current = next
	if install != nil {
		install()
	}
	d.updateReadStateLocked()
	d.mu.Unlock()
	old.unref(d)

	if d.manifest.size > maxManifestSize {
		logNum := edit.LogNum
		if logNum == 0 {
			d.mu.Lock()
			logNum = d.oldestLogLocked()
			d.mu.Unlock()
		}
		if err := d.rotateManifest(nv, logNum); err != nil {
			d.opts.Logger.Warn("lsm: manifest rotation failed; continuing with the old one", "err", err)
		}
	}
	return nil
}

func (d *DB) oldestLogLocked() base.FileNum {
	if len(d.mu.imm) > 0 {
		return d.mu.imm[0].logNum
	}
	return d.mu.mem.logNum
}

// Apply applies the batch atomically. With wo.Sync (the default, also for a
// nil wo) it returns only after the batch is durable. An error means
// nothing of the batch was acknowledged; after a WAL write or sync failure
// the DB refuses further writes (its state on disk is no longer known).
// After a successful Apply the batch is empty: the memtable keeps its
// buffer, so the batch's next mutation starts a new one.
func (d *DB) Apply(b *Batch, wo *WriteOptions) error {
	if b.Len() == 0 {
		return nil
	}
	if err := b.validate(d.opts); err != nil {
		return err
	}
	if len(b.repr) > wal.MaxPayloadSize {
		return fmt.Errorf("%w: batch of %d bytes exceeds the limit of %d", ErrInvalidInput, len(b.repr), wal.MaxPayloadSize)
	}
	sync := wo == nil || wo.Sync
	me, err := d.reserveMemtable()
	if err != nil {
		return err
	}
	off, err := me.wal.AppendAt(b.repr, sync)
	if err != nil {
		me.writers.Done()
		d.setBackgroundError(fmt.Errorf("lsm: WAL %s: %w", wal.SegmentName(me.logNum), err))
		return fmt.Errorf("lsm: write not acknowledged: %w", err)
	}
	// NB: the memtable keeps the batch's buffer instead of copying every
	// key and value out of it; the batch lets go of it.
	entries, locs := d.decodeForMemtable(b.repr, me.logNum, off, int(b.count))
	me.mem.AddBatchOwned(entries, locs, b.repr)
	me.writers.Done()
	d.m.userBytes.Add(uint64(len(b.repr)))
	b.repr, b.count, b.err = nil, 0, nil
	return nil
}

// decodeForMemtable decodes a batch written at payloadOff of WAL segment
// num, locating in the segment every value large enough to be separated:
// the flush will reference those values in place instead of copying them.
func (d *DB) decodeForMemtable(repr []byte, num base.FileNum, payloadOff int64, n int) ([]base.Entry, []memtable.Loc) {
	entries := make([]base.Entry, 0, n)
	var locs []memtable.Loc
	thr := d.opts.ValueSeparationThreshold
	_ = decodeBatch(repr, func(e base.Entry, valueOff int) error {
		if thr > 0 && e.Kind == base.KindSet && len(e.Value) >= thr {
			if locs == nil {
				locs = make([]memtable.Loc, n)
			}
			locs[len(entries)] = memtable.Loc{FileNum: num, Offset: uint64(payloadOff) + uint64(valueOff)}
		}
		entries = append(entries, e)
		return nil
	})
	return entries, locs
}

// Set writes value under key at version.
func (d *DB) Set(key, value []byte, version uint64, wo *WriteOptions) error {
	var b Batch
	b.Set(key, value, version)
	return d.Apply(&b, wo)
}

// Delete writes a tombstone for key at version.
func (d *DB) Delete(key []byte, version uint64, wo *WriteOptions) error {
	var b Batch
	b.Delete(key, version)
	return d.Apply(&b, wo)
}

func (d *DB) setBackgroundError(err error) {
	d.mu.Lock()
	if d.mu.bgErr == nil {
		d.mu.bgErr = err
	}
	d.signalBackgroundDoneLocked() // wake Flush and stalled writers
	d.mu.Unlock()
	d.opts.Logger.Error("lsm: background error; writes are refused from now on", "err", err)
	if f := d.opts.EventListener.BackgroundError; f != nil {
		f(err)
	}
}

// reserveMemtable returns the mutable memtable with a writer reference,
// rotating it when full and stalling (bounded by MaxWriteStall) while too
// many memtables or L0 tables wait for background work.
func (d *DB) reserveMemtable() (*memEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var stallStart time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if !stallStart.IsZero() {
			d.m.stallNanos.Add(int64(d.opts.Clock.Now().Sub(stallStart)))
			if f := d.opts.EventListener.WriteStallEnd; f != nil {
				f()
			}
		}
	}()
	for {
		if d.mu.closed {
			return nil, ErrClosed
		}
		if d.mu.bgErr != nil {
			return nil, d.mu.bgErr
		}
		me := d.mu.mem
		reason := ""
		switch {
		case me.mem.Size() < d.opts.MemTableSize:
			me.writers.Add(1)
			return me, nil
		case len(d.mu.imm)+1 >= d.opts.MemTableStopWritesThreshold:
			reason = "too many memtables waiting to flush"
		case len(d.mu.current.v.Levels[0]) >= d.opts.L0StopWritesThreshold:
			reason = "too many L0 tables waiting to compact"
		default:
			if err := d.rotateMemtableLocked(); err != nil {
				return nil, err
			}
			continue
		}
		if stallStart.IsZero() {
			stallStart = d.opts.Clock.Now()
			timer = time.NewTimer(d.opts.MaxWriteStall)
			d.m.stalls.Add(1)
			if f := d.opts.EventListener.WriteStallBegin; f != nil {
				f(reason)
			}
		}
		done := d.mu.bgDone
		d.mu.Unlock()
		select {
		case <-done:
			d.mu.Lock()
		case <-timer.C:
			d.mu.Lock()
			d.m.stallFailures.Add(1)
			return nil, fmt.Errorf("%w (%s for %v)", ErrWriteStall, reason, d.opts.MaxWriteStall)
		}
	}
}

// rotateMemtableLocked seals the mutable memtable and starts a new one on a
// new WAL segment. REQUIRES: d.mu held.
func (d *DB) rotateMemtableLocked() error {
	num := d.allocFileNumLocked()
	w, err := d.createWAL(num)
	if err != nil {
		d.mu.bgErr = err
		return err
	}
	d.mu.imm = append(d.mu.imm, d.mu.mem)
	d.mu.mem = &memEntry{mem: memtable.New(), wal: w, logNum: num}
	d.updateReadStateLocked()
	select {
	case d.flushCh <- struct{}{}:
	default:
	}
	return nil
}

// signalBackgroundDoneLocked wakes everyone waiting for background work.
// REQUIRES: d.mu held.
func (d *DB) signalBackgroundDoneLocked() {
	close(d.mu.bgDone)
	d.mu.bgDone = make(chan struct{})
}

// Flush seals the mutable memtable and waits until it and every memtable
// before it are in tables.
func (d *DB) Flush() error { return d.FlushContext(context.Background()) }

// FlushContext is Flush that gives up waiting when ctx is done and returns
// ctx's error. The flush goes on in the background (a flush that keeps
// failing, on a full disk say, is retried until Close); what was not
// flushed is in the WAL and replayed at the next Open.
func (d *DB) FlushContext(ctx context.Context) error {
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	if !d.mu.mem.mem.Empty() {
		if err := d.rotateMemtableLocked(); err != nil {
			d.mu.Unlock()
			return err
		}
	}
	for len(d.mu.imm) > 0 && d.mu.bgErr == nil && !d.mu.closed {
		done := d.mu.bgDone
		d.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		d.mu.Lock()
	}
	err := d.mu.bgErr
	if d.mu.closed {
		err = ErrClosed
	}
	d.mu.Unlock()
	return err
}

// SetCompactionRate changes the compaction write bandwidth limit while the
// DB runs; 0 removes the limit.
func (d *DB) SetCompactionRate(bytesPerSecond int64) {
	if bytesPerSecond <= 0 {
		d.limiter.SetLimit(rate.Inf)
		return
	}
	d.limiter.SetLimit(rate.Limit(bytesPerSecond))
}

// Close stops background work, syncs the WAL and releases the directory.
// Unflushed memtables are recovered from the WAL by the next Open. Close is
// idempotent.
func (d *DB) Close() error {
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return nil
	}
	d.mu.closed = true
	d.signalBackgroundDoneLocked()
	d.mu.Unlock()
	close(d.closing)
	d.cancel()
	d.wg.Wait()

	var errs []error
	d.mu.Lock()
	mems := append(slices.Clone(d.mu.imm), d.mu.mem)
	cur := d.mu.current
	d.mu.current = nil
	rs := d.mu.readState
	d.mu.readState = nil
	d.mu.Unlock()
	if rs != nil {
		rs.unref(d)
	}
	for _, me := range mems {
		me.writers.Wait()
		if err := me.wal.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	d.manifestMu.Lock()
	if d.manifest.w != nil {
		if err := d.manifest.w.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	d.manifestMu.Unlock()
	cur.unref(d)
	errs = append(errs, d.lock.Close())
	return errors.Join(errs...)
}

// ctx is the context of engine-internal reads; the engine has no request
// context of its own.
var bgCtx = context.Background()
