package tiering

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/tiering/internal/catalog"
)

const (
	catalogName = "TIERCAT"
	metaDirName = "tiermeta"
	cacheDir    = "tiercache"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Key identifies an engine object.
type Key = catalog.Key

// Manager is an objstorage.Provider that keeps hot objects as local files
// and serves cold ones from an object store. Pass it as lsm.Options.Provider,
// then Attach the opened DB. See the package documentation.
type Manager struct {
	opts  Options
	fs    vfs.FS
	local objstorage.Provider
	cat   *catalog.Catalog
	cache *diskCache
	// reads serves remote reads, restore and hydration (primary, then
	// fallback); primary reads the primary alone (GC), each call retried.
	reads, primary *reads
	limiter        *rate.Limiter
	m              counters

	db atomic.Pointer[lsm.DB]

	// bgMu serializes Backup and GC, so that GC never deletes an object a
	// backup in progress is about to reference.
	bgMu sync.Mutex
	// mu guards the fields below.
	mu struct {
		sync.Mutex
		// inflight holds the objects being uploaded or downloaded; the
		// channel is closed when the transfer ends.
		inflight map[Key]chan struct{}
		// gone holds inflight objects the engine removed meanwhile: their
		// upload must not enter the catalog.
		gone map[Key]bool
		// open are the open remote readables, by object.
		open map[Key][]*remoteReadable
		// unrefSince is when GC first saw an unreferenced object; it is
		// kept in TIERGC across restarts (gcstate.go).
		unrefSince map[string]time.Time
		// backupSeq is the last manifest backup sequence number, or -1
		// until listed.
		backupSeq int64
		pending   int
		closed    bool
		// dirty is set once the dirty marker exists; unsynced lists the
		// hydrated copies written since.
		dirty    bool
		unsynced []string
	}

	stop chan struct{}
	wg   sync.WaitGroup

	// beforeLocalRemoveForTesting, if set, runs after an upload entered
	// the catalog and before the local copy is deleted; an error stops
	// there (a crash, for tests).
	beforeLocalRemoveForTesting func(Key) error
}

var _ objstorage.Provider = (*Manager)(nil)

// Open opens the tiering state in opts.Dir (created if needed): it replays
// the catalog and empties the chunk cache.
func Open(opts Options) (*Manager, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	fs := opts.FS
	for _, d := range []string{opts.Dir, fs.PathJoin(opts.Dir, metaDirName)} {
		if err := fs.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("tiering: create %s: %w", d, err)
		}
	}
	cat, err := catalog.Open(fs, fs.PathJoin(opts.Dir, catalogName), opts.Logger)
	if err != nil {
		return nil, err
	}
	cache, err := openDiskCache(fs, fs.PathJoin(opts.Dir, cacheDir), max(opts.CacheSize, 0))
	if err != nil {
		cat.Close()
		return nil, err
	}
	m := &Manager{opts: opts, fs: fs, local: objstorage.NewLocal(fs, opts.Dir), cat: cat, cache: cache, stop: make(chan struct{})}
	if m.reads, err = newReads(opts.Bucket, opts.Fallback, opts.HedgeDelay, opts.Retry, &m.m); err != nil {
		cat.Close()
		return nil, err
	}
	m.primary, _ = newReads(opts.Bucket, nil, 0, opts.Retry, &m.m)
	limit := rate.Inf
	if opts.UploadRate > 0 {
		limit = rate.Limit(opts.UploadRate)
	}
	m.limiter = rate.NewLimiter(limit, uploadBurst)
	m.mu.inflight = map[Key]chan struct{}{}
	m.mu.gone = map[Key]bool{}
	m.mu.open = map[Key][]*remoteReadable{}
	m.mu.unrefSince = m.loadGCState()
	m.mu.backupSeq = -1
	if _, err := fs.Stat(fs.PathJoin(opts.Dir, dirtyName)); err == nil {
		m.mu.dirty = true
		if err := m.verifyLocalCopies(); err != nil {
			cat.Close()
			return nil, fmt.Errorf("tiering: verify local copies after a crash: %w", err)
		}
		if err := m.syncHydrated(); err != nil {
			cat.Close()
			return nil, err
		}
	}
	// Kept metadata of objects no longer in the catalog is garbage.
	if names, err := fs.List(fs.PathJoin(opts.Dir, metaDirName)); err == nil {
		live := map[string]bool{}
		for _, e := range cat.Entries() {
			live[objstorage.ObjectName(e.Type, e.Num)] = true
		}
		for _, n := range names {
			if !live[n] {
				_ = fs.Remove(fs.PathJoin(opts.Dir, metaDirName, n))
			}
		}
	}
	return m, nil
}

// uploadBurst is the rate limiter's burst, and the size of upload reads.
const uploadBurst = 1 << 20

// Attach gives the Manager the DB it serves, whose Options.Provider it is,
// and starts the background loop (unless DisableBackground): uploads every
// UploadInterval, a manifest backup and GC every BackupInterval.
func (m *Manager) Attach(db *lsm.DB) {
	if !m.db.CompareAndSwap(nil, db) {
		panic("tiering: Attach called twice")
	}
	if m.opts.DisableBackground {
		return
	}
	m.wg.Add(1)
	go m.loop()
}

func (m *Manager) loop() {
	defer m.wg.Done()
	up := time.NewTicker(m.opts.UploadInterval)
	defer up.Stop()
	bk := time.NewTicker(m.opts.BackupInterval)
	defer bk.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-m.stop
		cancel()
	}()
	for {
		select {
		case <-m.stop:
			return
		case <-up.C:
			if err := m.Upload(ctx); err != nil && ctx.Err() == nil {
				m.opts.Logger.Warn("tiering: upload pass failed; will retry", "err", err)
			}
		case <-bk.C:
			if err := m.Backup(ctx); err != nil && ctx.Err() == nil {
				m.opts.Logger.Warn("tiering: manifest backup failed; will retry", "err", err)
			} else if err := m.GC(ctx); err != nil && ctx.Err() == nil {
				m.opts.Logger.Warn("tiering: GC failed; will retry", "err", err)
			}
		}
	}
}

// Shutdown stops the background loop and uploads a final manifest backup
// (after flushing the DB). Call it before closing the DB; an error means
// the final backup failed (the previous ones stand).
func (m *Manager) Shutdown(ctx context.Context) error {
	m.stopLoop()
	if m.db.Load() == nil {
		return nil
	}
	return m.Backup(ctx)
}

func (m *Manager) stopLoop() {
	m.mu.Lock()
	if !m.mu.closed {
		m.mu.closed = true
		close(m.stop)
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// Close releases the Manager. Call it after closing the DB. It is
// idempotent; it does not close the buckets.
func (m *Manager) Close() error {
	m.stopLoop()
	return errors.Join(m.syncHydrated(), m.cat.Close())
}

func (m *Manager) objectName(typ objstorage.FileType, num uint64) string {
	return objectName(m.opts.NodeID, typ, num)
}

func objectName(node string, typ objstorage.FileType, num uint64) string {
	dir := "tables"
	if typ == objstorage.FileTypeBlob {
		dir = "blobs"
	}
	return node + "/" + dir + "/" + objstorage.ObjectName(typ, num)
}

func (m *Manager) metaPath(typ objstorage.FileType, num uint64) string {
	return m.fs.PathJoin(m.opts.Dir, metaDirName, objstorage.ObjectName(typ, num))
}

// Create is part of the objstorage.Provider interface: new objects are
// always written locally.
func (m *Manager) Create(ctx context.Context, typ objstorage.FileType, num uint64) (objstorage.Writable, error) {
	return m.local.Create(ctx, typ, num)
}

// Open is part of the objstorage.Provider interface: the local file if
// there is one (segment blob files appear locally by rename), else the
// remote object if the catalog holds it.
func (m *Manager) Open(ctx context.Context, typ objstorage.FileType, num uint64) (objstorage.Readable, error) {
	r, err := m.local.Open(ctx, typ, num)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return r, err
	}
	e, ok := m.cat.Get(Key{Type: typ, Num: num})
	if !ok {
		return nil, err
	}
	meta, merr := m.fs.Open(m.metaPath(typ, num))
	if merr != nil {
		return nil, fmt.Errorf("tiering: open kept metadata of remote %s: %w", objstorage.ObjectName(typ, num), merr)
	}
	rr := &remoteReadable{m: m, e: e, what: objstorage.ObjectName(typ, num), name: m.objectName(typ, num), meta: meta}
	m.mu.Lock()
	m.mu.open[e.Key()] = append(m.mu.open[e.Key()], rr)
	m.mu.Unlock()
	return rr, nil
}

func (m *Manager) unregister(r *remoteReadable) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := r.e.Key()
	m.mu.open[k] = slices.DeleteFunc(m.mu.open[k], func(x *remoteReadable) bool { return x == r })
	if len(m.mu.open[k]) == 0 {
		delete(m.mu.open, k)
	}
}

// Remove is part of the objstorage.Provider interface. It removes the
// local copy and drops the object from the catalog; the remote copy stays
// until GC finds no manifest backup referencing it.
func (m *Manager) Remove(typ objstorage.FileType, num uint64) error {
	k := Key{Type: typ, Num: num}
	m.mu.Lock()
	if _, ok := m.mu.inflight[k]; ok {
		m.mu.gone[k] = true
	}
	m.mu.Unlock()
	if err := m.local.Remove(typ, num); err != nil {
		return err
	}
	if err := m.cat.Drop(k); err != nil {
		return err
	}
	m.cache.evictObject(typ, num)
	if err := m.fs.Remove(m.metaPath(typ, num)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// List is part of the objstorage.Provider interface: local and remote
// objects.
func (m *Manager) List(typ objstorage.FileType) ([]uint64, error) {
	nums, err := m.local.List(typ)
	if err != nil {
		return nil, err
	}
	for _, e := range m.cat.Entries() {
		if e.Type == typ && !slices.Contains(nums, e.Num) {
			nums = append(nums, e.Num)
		}
	}
	return nums, nil
}

// acquire marks k in flight, waiting for another transfer of k to end.
func (m *Manager) acquire(ctx context.Context, k Key) error {
	for {
		m.mu.Lock()
		ch, ok := m.mu.inflight[k]
		if !ok {
			m.mu.inflight[k] = make(chan struct{})
			m.mu.Unlock()
			return nil
		}
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release ends k's transfer and reports whether the engine removed k
// meanwhile.
func (m *Manager) release(k Key) (gone bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	close(m.mu.inflight[k])
	delete(m.mu.inflight, k)
	gone = m.mu.gone[k]
	delete(m.mu.gone, k)
	return gone
}

// errGone is returned by uploadObject for an object the engine removed.
var errGone = errors.New("tiering: object removed by the engine")

// uploadObject uploads a local object (unless the catalog already has it),
// verifies it, writes it to the fallback, keeps its metadata locally and
// records it in the catalog; with deleteLocal it then deletes the local
// copy. Objects first, catalog after, local deletion last: a crash at any
// point leaves the object readable, and a retry is idempotent (same name,
// same immutable content).
func (m *Manager) uploadObject(ctx context.Context, k Key, deleteLocal bool) (catalog.Entry, error) {
	if err := m.acquire(ctx, k); err != nil {
		return catalog.Entry{}, err
	}
	e, err := m.uploadLocked(ctx, k)
	gone := m.release(k)
	if err != nil {
		if !gone {
			m.m.uploadFailures.Add(1)
		}
		return e, err
	}
	if gone {
		// The engine removed it during the upload, after Remove's
		// catalog drop: take it out again. GC deletes the remote copy.
		_ = m.cat.Drop(k)
		_ = m.fs.Remove(m.metaPath(k.Type, k.Num))
		return e, errGone
	}
	if deleteLocal {
		if f := m.beforeLocalRemoveForTesting; f != nil {
			if err := f(k); err != nil {
				return e, err
			}
		}
		if err := m.local.Remove(k.Type, k.Num); err != nil {
			return e, fmt.Errorf("tiering: remove local %s: %w", objstorage.ObjectName(k.Type, k.Num), err)
		}
	}
	return e, nil
}

func (m *Manager) uploadLocked(ctx context.Context, k Key) (catalog.Entry, error) {
	if e, ok := m.cat.Get(k); ok {
		return e, nil
	}
	what := objstorage.ObjectName(k.Type, k.Num)
	r, err := m.local.Open(ctx, k.Type, k.Num)
	if errors.Is(err, os.ErrNotExist) {
		return catalog.Entry{}, errGone
	}
	if err != nil {
		return catalog.Entry{}, err
	}
	defer r.Close()
	size := r.Size()
	metaOff, err := lsm.ObjectMetaOffset(ctx, k.Type, k.Num, r)
	if err != nil {
		return catalog.Entry{}, fmt.Errorf("tiering: upload %s: %w", what, err)
	}
	name := m.objectName(k.Type, k.Num)
	var crc uint32
	put := func(b objectstore.Bucket, limit bool) error {
		return objectstore.Retry(ctx, m.opts.Retry, func(ctx context.Context) error {
			rd := &readableReader{ctx: ctx, r: r, size: size}
			if limit {
				rd.limiter = m.limiter
			}
			if err := b.Put(ctx, name, rd, size); err != nil {
				return err
			}
			crc = rd.crc
			return nil
		})
	}
	if err := put(m.opts.Bucket, true); err != nil {
		return catalog.Entry{}, fmt.Errorf("tiering: upload %s: %w", what, err)
	}
	attrs, err := m.attributes(ctx, m.opts.Bucket, name)
	if err != nil {
		return catalog.Entry{}, fmt.Errorf("tiering: verify upload of %s: %w", what, err)
	}
	if attrs.Size != size || (attrs.HasCRC32C && attrs.CRC32C != crc) {
		return catalog.Entry{}, fmt.Errorf("tiering: verify upload of %s: stored size %d crc32c %#08x (known %v), local size %d crc32c %#08x",
			what, attrs.Size, attrs.CRC32C, attrs.HasCRC32C, size, crc)
	}
	m.m.bytesUp.Add(uint64(size))
	m.m.objectsUp.Add(1)
	if m.opts.Fallback != nil {
		if err := put(m.opts.Fallback, false); err != nil {
			return catalog.Entry{}, fmt.Errorf("tiering: upload %s to the fallback: %w", what, err)
		}
		m.m.fallbackBytesUp.Add(uint64(size))
	}
	// Keep the metadata locally (synced) before the catalog says remote.
	meta := make([]byte, size-metaOff)
	if err := r.ReadAt(ctx, meta, metaOff); err != nil {
		return catalog.Entry{}, fmt.Errorf("tiering: read metadata of %s: %w", what, err)
	}
	if err := vfs.WriteFileAtomic(m.fs, m.metaPath(k.Type, k.Num), meta); err != nil {
		return catalog.Entry{}, fmt.Errorf("tiering: keep metadata of %s: %w", what, err)
	}
	e := catalog.Entry{Type: k.Type, Num: k.Num, Size: size, CRC: crc, MetaOff: metaOff}
	if err := m.cat.Add(e); err != nil {
		return catalog.Entry{}, err
	}
	return e, nil
}

func (m *Manager) attributes(ctx context.Context, b objectstore.Bucket, name string) (a objectstore.Attributes, err error) {
	err = objectstore.Retry(ctx, m.opts.Retry, func(ctx context.Context) error {
		a, err = b.Attributes(ctx, name)
		return err
	})
	return a, err
}

// readableReader streams a Readable, computing its CRC32C and waiting on a
// rate limiter.
type readableReader struct {
	ctx     context.Context
	r       objstorage.Readable
	off     int64
	size    int64
	crc     uint32
	limiter *rate.Limiter
}

func (rr *readableReader) Read(p []byte) (int, error) {
	if rr.off >= rr.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), rr.size-rr.off, uploadBurst))
	if rr.limiter != nil {
		if err := rr.limiter.WaitN(rr.ctx, n); err != nil {
			return 0, err
		}
	}
	if err := rr.r.ReadAt(rr.ctx, p[:n], rr.off); err != nil {
		return 0, err
	}
	rr.crc = crc32.Update(rr.crc, castagnoli, p[:n])
	rr.off += int64(n)
	return n, nil
}

// Upload runs one upload pass: every cold object (by the policy) that is
// still local is uploaded, verified, recorded remote and deleted locally,
// at most UploadConcurrency at a time. It returns the joined errors of the
// objects that failed (they are retried by the next pass).
func (m *Manager) Upload(ctx context.Context) error {
	db := m.db.Load()
	if db == nil {
		return errors.New("tiering: no DB attached")
	}
	p := m.opts.Policy
	tables, blobs := p.ColdObjects(db.Tables(), db.BlobFiles(), m.opts.Clock.Now())
	var keys []Key
	localT, _ := m.local.List(objstorage.FileTypeTable)
	localB, _ := m.local.List(objstorage.FileTypeBlob)
	for _, n := range tables {
		if slices.Contains(localT, n) {
			keys = append(keys, Key{Type: objstorage.FileTypeTable, Num: n})
		}
	}
	for _, n := range blobs {
		if slices.Contains(localB, n) {
			keys = append(keys, Key{Type: objstorage.FileTypeBlob, Num: n})
		}
	}
	m.mu.Lock()
	m.mu.pending = len(keys)
	m.mu.Unlock()
	_, err := m.uploadAll(ctx, keys, true)
	return err
}

// uploadAll uploads keys with bounded concurrency and returns their
// entries (those that succeeded).
func (m *Manager) uploadAll(ctx context.Context, keys []Key, deleteLocal bool) (map[Key]catalog.Entry, error) {
	sem := make(chan struct{}, m.opts.UploadConcurrency)
	var mu sync.Mutex
	out := map[Key]catalog.Entry{}
	var errs []error
	var wg sync.WaitGroup
	for _, k := range keys {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			e, err := m.uploadObject(ctx, k, deleteLocal)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if !errors.Is(err, errGone) {
					errs = append(errs, err)
				}
				return
			}
			out[k] = e
			if deleteLocal {
				// NB: only the upload pass set pending; a backup's
				// uploads are not part of it.
				m.mu.Lock()
				m.mu.pending = max(0, m.mu.pending-1)
				m.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}
