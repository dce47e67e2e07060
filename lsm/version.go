package lsm

import (
	"bytes"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/internal/blob"
	"github.com/tierkv/tierkv/lsm/internal/manifest"
	"github.com/tierkv/tierkv/lsm/internal/sstable"
	"github.com/tierkv/tierkv/lsm/objstorage"
)

// table is an open table. Versions hold references to it; when the last
// reference goes and the table is obsolete, its file is removed.
type table struct {
	meta     *manifest.TableMeta
	reader   *sstable.Reader
	refs     atomic.Int32
	obsolete atomic.Bool
}

func (t *table) info(level int) TableInfo {
	m := t.meta
	return TableInfo{Level: level, FileNum: uint64(m.FileNum), Size: m.Size, Smallest: m.Smallest, Largest: m.Largest,
		MinVersion: m.MinVersion, MaxVersion: m.MaxVersion, NumEntries: m.NumEntries, NumTombstones: m.NumTombstones,
		Created: time.UnixMilli(m.CreatedUnixMilli)}
}

func (t *table) unref(d *DB) {
	if t.refs.Add(-1) != 0 {
		return
	}
	t.reader.Close()
	if !t.obsolete.Load() {
		return
	}
	d.cache.EvictFile(uint64(t.meta.FileNum))
	if err := d.provider.Remove(objstorage.FileTypeTable, uint64(t.meta.FileNum)); err != nil {
		d.opts.Logger.Warn("lsm: removing obsolete table failed", "file", t.meta.FileNum, "err", err)
		return
	}
	if f := d.opts.EventListener.TableDeleted; f != nil {
		f(t.info(-1))
	}
}

// blobFile is an open blob file, reference counted like a table.
type blobFile struct {
	meta     *manifest.BlobMeta
	reader   *blob.Reader
	refs     atomic.Int32
	obsolete atomic.Bool
}

func (b *blobFile) info(live uint64) BlobInfo {
	return BlobInfo{FileNum: uint64(b.meta.FileNum), Size: b.meta.Size, NumValues: b.meta.NumValues,
		ValueBytes: b.meta.ValueBytes, LiveBytes: live, Created: time.UnixMilli(b.meta.CreatedUnixMilli)}
}

func (b *blobFile) unref(d *DB) {
	if b.refs.Add(-1) != 0 {
		return
	}
	b.reader.Close()
	if !b.obsolete.Load() {
		return
	}
	d.cache.EvictFile(uint64(b.meta.FileNum))
	if err := d.provider.Remove(objstorage.FileTypeBlob, uint64(b.meta.FileNum)); err != nil {
		d.opts.Logger.Warn("lsm: removing obsolete blob file failed", "file", b.meta.FileNum, "err", err)
		return
	}
	if f := d.opts.EventListener.BlobDeleted; f != nil {
		f(b.info(0))
	}
}

func (d *DB) openBlob(m *manifest.BlobMeta) (*blobFile, error) {
	name := objstorage.ObjectName(objstorage.FileTypeBlob, uint64(m.FileNum))
	r, err := d.provider.Open(bgCtx, objstorage.FileTypeBlob, uint64(m.FileNum))
	if err != nil {
		return nil, fmt.Errorf("lsm: open blob file %s: %w", name, err)
	}
	var br *blob.Reader
	if m.Segment {
		br = blob.OpenSegment(r, d.path(name))
	} else if br, err = blob.Open(bgCtx, r, d.path(name)); err != nil {
		r.Close()
		return nil, fmt.Errorf("lsm: open blob file %s: %w", name, err)
	}
	return &blobFile{meta: m, reader: br}, nil
}

// version is a manifest.Version with its open tables and blob files. It is
// immutable and reference counted; the DB's current version holds one
// reference.
type version struct {
	v      *manifest.Version
	tables [manifest.NumLevels][]*table
	blobs  map[base.FileNum]*blobFile
	refs   atomic.Int32
}

func newVersion(v *manifest.Version, open map[base.FileNum]*table, openBlobs map[base.FileNum]*blobFile) *version {
	nv := &version{v: v, blobs: make(map[base.FileNum]*blobFile, len(v.Blobs))}
	nv.refs.Store(1)
	for _, m := range v.Blobs {
		b := openBlobs[m.FileNum]
		b.refs.Add(1)
		nv.blobs[m.FileNum] = b
	}
	for l := range v.Levels {
		nv.tables[l] = make([]*table, len(v.Levels[l]))
		for i, m := range v.Levels[l] {
			t := open[m.FileNum]
			t.refs.Add(1)
			nv.tables[l][i] = t
		}
	}
	return nv
}

func (v *version) ref() { v.refs.Add(1) }

func (v *version) unref(d *DB) {
	if v.refs.Add(-1) != 0 {
		return
	}
	for _, lt := range v.tables {
		for _, t := range lt {
			t.unref(d)
		}
	}
	for _, b := range v.blobs {
		b.unref(d)
	}
}

// resolve returns e with a blob reference replaced by the value it points
// at, read into a new slice the caller owns. Other entries are returned as
// they are.
//
// NB: blob values bypass the block cache. They are large (a 64 MiB cache
// holds a few thousand 10 KiB values), so caching them evicts the index and
// data blocks every read needs and costs a copy per hit; the OS page cache
// keeps hot blob pages anyway.
func (v *version) resolve(e base.Entry) (base.Entry, error) {
	return v.resolveValue(e, nil, false)
}

// resolveOnce is resolve for a compaction that copies e's value into a new
// blob file (blob.Reader.ReadValueOnce): the value is read into buf where it
// fits, so the result may alias buf.
func (v *version) resolveOnce(e base.Entry, buf []byte) (base.Entry, error) {
	return v.resolveValue(e, buf, true)
}

func (v *version) resolveValue(e base.Entry, buf []byte, once bool) (base.Entry, error) {
	if e.Kind != base.KindValueRef {
		return e, nil
	}
	ref, err := blob.DecodeRef(e.Value)
	if err != nil {
		return e, fmt.Errorf("key %q: %w", e.Key, err)
	}
	b, ok := v.blobs[ref.FileNum]
	if !ok {
		return e, base.CorruptionErrorf("key %q references blob file %s, which is not live", e.Key, ref.FileNum)
	}
	var val []byte
	if once {
		val, err = b.reader.ReadValueOnce(bgCtx, ref, buf)
	} else {
		val, err = b.reader.ReadValue(bgCtx, ref)
	}
	if err != nil {
		return e, err
	}
	e.Kind, e.Value = base.KindSet, val
	return e, nil
}

// openTable opens the reader of a table. The returned table has no
// references yet.
func (d *DB) openTable(m *manifest.TableMeta) (*table, error) {
	name := objstorage.ObjectName(objstorage.FileTypeTable, uint64(m.FileNum))
	r, err := d.provider.Open(bgCtx, objstorage.FileTypeTable, uint64(m.FileNum))
	if err != nil {
		return nil, fmt.Errorf("lsm: open table %s: %w", name, err)
	}
	rd, err := sstable.Open(bgCtx, r, sstable.ReaderOptions{Cache: d.cache, FileNum: uint64(m.FileNum), Name: d.path(name), Stats: &d.tableStats})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("lsm: open table %s: %w", name, err)
	}
	return &table{meta: m, reader: rd}, nil
}

// readState is what a read sees: the memtables and a version. It is
// immutable and reference counted; the DB holds one reference to the
// current one and replaces it whenever the memtables or the version change,
// so a read takes a reference instead of building its own.
type readState struct {
	mems []*memEntry // newest first
	v    *version
	refs atomic.Int32
}

// updateReadStateLocked installs a readState for the current memtables and
// version. REQUIRES: d.mu held.
func (d *DB) updateReadStateLocked() {
	rs := &readState{mems: make([]*memEntry, 0, 1+len(d.mu.imm)), v: d.mu.current}
	rs.refs.Store(1)
	if d.mu.mem != nil {
		rs.mems = append(rs.mems, d.mu.mem)
	}
	for i := len(d.mu.imm) - 1; i >= 0; i-- {
		rs.mems = append(rs.mems, d.mu.imm[i])
	}
	rs.v.ref()
	old := d.mu.readState
	d.mu.readState = rs
	if old != nil {
		old.unref(d)
	}
}

func (rs *readState) unref(d *DB) {
	if rs.refs.Add(-1) == 0 {
		rs.v.unref(d)
	}
}

func (d *DB) loadReadState() (*readState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return nil, ErrClosed
	}
	rs := d.mu.readState
	rs.refs.Add(1)
	return rs, nil
}

// Entry is the newest version of a key, tombstones included.
type Entry struct {
	Key     []byte
	Value   []byte
	Version uint64
	// Deleted reports a tombstone; Value is nil.
	Deleted bool
}

// Get returns the value of the key's newest version. It returns ErrNotFound
// if the key is absent or its newest version is a tombstone. The returned
// slice belongs to the caller.
func (d *DB) Get(key []byte) (value []byte, version uint64, err error) {
	e, err := d.getEntry(key, true)
	if err != nil {
		return nil, 0, err
	}
	if e.Deleted {
		return nil, 0, ErrNotFound
	}
	return e.Value, e.Version, nil
}

// GetEntry returns the key's newest version, which may be a tombstone
// (replication and repair need those). It returns ErrNotFound if the engine
// holds no version of the key.
func (d *DB) GetEntry(key []byte) (Entry, error) {
	e, err := d.getEntry(key, true)
	if err == nil {
		e.Key = bytes.Clone(key)
	}
	return e, err
}

// GetVersion is GetEntry without the value: it returns the version of the
// key's newest entry and whether that entry is a tombstone, without reading
// a separated value (a replica answering a digest read needs no more). It
// returns ErrNotFound if the engine holds no version of the key.
func (d *DB) GetVersion(key []byte) (version uint64, deleted bool, err error) {
	e, err := d.getEntry(key, false)
	return e.Version, e.Deleted, err
}

// getEntry is GetEntry without Key filled in, and without Value unless
// withValue.
func (d *DB) getEntry(key []byte, withValue bool) (Entry, error) {
	rs, err := d.loadReadState()
	if err != nil {
		return Entry{}, err
	}
	defer rs.unref(d)
	best, found, err := rs.get(key)
	if err != nil || !found {
		if err == nil {
			err = ErrNotFound
		}
		return Entry{}, err
	}
	e := Entry{Version: best.Version, Deleted: best.Kind == base.KindDelete}
	if !withValue {
		return e, nil
	}
	switch best.Kind {
	case base.KindValueRef:
		if best, err = rs.v.resolve(best); err != nil {
			return Entry{}, err
		}
		e.Value = best.Value // a new slice already
	case base.KindSet:
		e.Value = bytes.Clone(best.Value)
	}
	return e, nil
}

// get finds the highest version of key. Sources are visited newest first;
// a table whose max version is not above the best found so far cannot hold
// a newer version of the key and is skipped without a bloom probe or read.
func (rs *readState) get(key []byte) (best base.Entry, found bool, err error) {
	for _, me := range rs.mems {
		if found {
			if _, hi := me.mem.VersionRange(); hi <= best.Version {
				continue
			}
		}
		if e, ok := me.mem.Get(key); ok && (!found || e.Version > best.Version) {
			best, found = e, true
		}
	}
	consider := func(t *table) error {
		if found && t.meta.MaxVersion <= best.Version {
			return nil
		}
		if bytes.Compare(key, t.meta.Smallest) < 0 || bytes.Compare(key, t.meta.Largest) > 0 {
			return nil
		}
		e, ok, err := t.reader.Get(bgCtx, key)
		if err != nil {
			return err
		}
		if ok && (!found || e.Version > best.Version) {
			best, found = e, true
		}
		return nil
	}
	l0 := rs.v.tables[0]
	for i := len(l0) - 1; i >= 0; i-- {
		if err := consider(l0[i]); err != nil {
			return best, false, err
		}
	}
	for l := 1; l < manifest.NumLevels; l++ {
		lt := rs.v.tables[l]
		// Levels 1+ are sorted and non-overlapping under leveled
		// compaction; size-tiered keeps everything in L0.
		i := sort.Search(len(lt), func(i int) bool { return bytes.Compare(lt[i].meta.Largest, key) >= 0 })
		if i < len(lt) {
			if err := consider(lt[i]); err != nil {
				return best, false, err
			}
		}
	}
	return best, found, nil
}
