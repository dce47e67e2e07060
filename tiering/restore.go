package tiering

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/tiering/internal/catalog"
)

// RestoreOptions configures Restore.
type RestoreOptions struct {
	// FS and Dir: the new engine directory (must not hold a DB). Default
	// FS: the OS.
	FS  vfs.FS
	Dir string
	// NodeID is the node whose latest manifest backup is restored.
	NodeID string
	// Bucket and Fallback as in Options: the fallback serves the restore
	// when the primary fails.
	Bucket, Fallback objectstore.Bucket
	// HedgeDelay and Retry as in Options.
	HedgeDelay time.Duration
	Retry      objectstore.RetryOptions
	// Concurrency bounds parallel metadata downloads. Default 8.
	Concurrency int
}

// ErrNoBackup is returned (wrapped) by Restore when the buckets answered and
// hold no manifest backup of the node.
var ErrNoBackup = errors.New("tiering: no manifest backup")

// RestoreInfo describes a restore.
type RestoreInfo struct {
	// Seq is the sequence number of the restored manifest backup.
	Seq uint64
	// Created is when the backup's engine flush started: the restored
	// engine holds every write the node had applied before it (and
	// possibly some after).
	Created time.Time
	// Objects and Bytes count the remote objects the new DB references;
	// MetaBytes the metadata downloaded (all that was downloaded, besides
	// the manifest backup).
	Objects   int
	Bytes     int64
	MetaBytes int64
}

// Restore builds an engine directory from node's latest manifest backup:
// the engine's MANIFEST and CURRENT, a catalog marking every referenced
// object remote, and the objects' metadata (bloom filters, indexes,
// properties, footers), but none of their data. Open a Manager on the
// directory (same NodeID and buckets), then lsm.Open with it as Provider:
// the engine serves at once, reading data by ranged GETs; Hydrate
// downloads the data in the background.
func Restore(ctx context.Context, o RestoreOptions) (*RestoreInfo, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	o.Retry = o.Retry.EnsureDefaults()
	fs := o.FS
	if _, err := fs.Stat(fs.PathJoin(o.Dir, "CURRENT")); err == nil {
		return nil, fmt.Errorf("tiering: restore: %s already holds a DB", o.Dir)
	}
	var cnt counters
	r, err := newReads(o.Bucket, o.Fallback, o.HedgeDelay, o.Retry, &cnt)
	if err != nil {
		return nil, err
	}
	b, err := latestBackup(ctx, o, r)
	if err != nil {
		return nil, err
	}
	snap, err := lsm.ParseManifestSnapshot(b.manifest)
	if err != nil {
		return nil, fmt.Errorf("tiering: restore %s: %w", backupName(o.NodeID, b.seq), err)
	}
	if len(snap.Tables)+len(snap.Blobs) != len(b.entries) {
		return nil, fmt.Errorf("%w: %s references %d objects but lists %d", ErrCorruptBackup, backupName(o.NodeID, b.seq), len(snap.Tables)+len(snap.Blobs), len(b.entries))
	}
	// Never reuse a number the old node may have used after the backup:
	// look at what both buckets hold (the fallback may be all that is up).
	minNext := snap.NextFileNum
	var listErrs []error
	listed := false
	for _, bk := range []objectstore.Bucket{o.Bucket, o.Fallback} {
		if bk == nil {
			continue
		}
		err := objectstore.Retry(ctx, o.Retry, func(ctx context.Context) error {
			for _, prefix := range []string{o.NodeID + "/tables/", o.NodeID + "/blobs/"} {
				if err := objectstore.Iter(ctx, bk, prefix, func(name string) error {
					base := name[strings.LastIndexByte(name, '/')+1:]
					if i := strings.IndexByte(base, '.'); i > 0 {
						if n, err := strconv.ParseUint(base[:i], 10, 64); err == nil {
							minNext = max(minNext, n+1)
						}
					}
					return nil
				}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			listErrs = append(listErrs, err)
		} else {
			listed = true
		}
	}
	if !listed {
		return nil, fmt.Errorf("tiering: restore node %s: list objects: %w", o.NodeID, errors.Join(listErrs...))
	}
	if err := fs.MkdirAll(fs.PathJoin(o.Dir, metaDirName), 0o755); err != nil {
		return nil, fmt.Errorf("tiering: restore: %w", err)
	}
	info := &RestoreInfo{Seq: b.seq, Created: time.UnixMilli(b.created), Objects: len(b.entries)}
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, e := range b.entries {
		info.Bytes += e.Size
		info.MetaBytes += e.Size - e.MetaOff
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			what := objstorage.ObjectName(e.Type, e.Num)
			meta, err := r.readRange(ctx, what, objectName(o.NodeID, e.Type, e.Num), e.MetaOff, e.Size-e.MetaOff)
			if err == nil {
				err = vfs.WriteFileAtomic(fs, fs.PathJoin(o.Dir, metaDirName, what), meta)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("tiering: restore metadata of %s: %w", what, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := catalog.WriteNew(fs, fs.PathJoin(o.Dir, catalogName), b.entries); err != nil {
		return nil, err
	}
	if err := lsm.WriteManifestSnapshot(fs, o.Dir, b.manifest, minNext); err != nil {
		return nil, fmt.Errorf("tiering: restore: %w", err)
	}
	return info, nil
}

// latestBackup reads the newest decodable manifest backup of the node. It
// lists the backups of both buckets (a primary that lost its newest
// backups, or is down, does not hide the fallback's) and reads each through
// r: from the primary, else from the fallback.
func latestBackup(ctx context.Context, o RestoreOptions, r *reads) (*backup, error) {
	var errs []error
	var seqs []uint64
	listed := false
	for _, bk := range []objectstore.Bucket{o.Bucket, o.Fallback} {
		if bk == nil {
			continue
		}
		var s []uint64
		err := objectstore.Retry(ctx, o.Retry, func(ctx context.Context) (err error) {
			s, err = listBackups(ctx, bk, o.NodeID)
			return err
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		listed = true
		seqs = append(seqs, s...)
	}
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	for i := len(seqs) - 1; i >= 0; i-- {
		b, err := readBackup(ctx, r, backupName(o.NodeID, seqs[i]))
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
	}
	if listed && len(seqs) == 0 {
		errs = append(errs, fmt.Errorf("%w under %s", ErrNoBackup, manifestPrefix(o.NodeID)))
	}
	return nil, fmt.Errorf("tiering: restore node %s: %w", o.NodeID, errors.Join(errs...))
}

// HydrateOptions configures Hydrate.
type HydrateOptions struct {
	// All downloads every remote object; by default only those the policy
	// does not consider cold (a later upload pass would evict cold ones
	// again).
	All bool
	// Progress, if set, is called after each object with the bytes done
	// and the total.
	Progress func(done, total int64)
}

// Hydrate downloads remote objects to local files, verifying their
// CRC32C, UploadConcurrency at a time. Open remote readables switch to the
// local copy. The DB may serve reads meanwhile.
func (m *Manager) Hydrate(ctx context.Context, o HydrateOptions) error {
	var todo []catalog.Entry
	cold := map[Key]bool{}
	if db := m.db.Load(); db != nil && !o.All {
		t, b := m.opts.Policy.ColdObjects(db.Tables(), db.BlobFiles(), m.opts.Clock.Now())
		for _, n := range t {
			cold[Key{Type: objstorage.FileTypeTable, Num: n}] = true
		}
		for _, n := range b {
			cold[Key{Type: objstorage.FileTypeBlob, Num: n}] = true
		}
	}
	var total int64
	for _, e := range m.cat.Entries() {
		if cold[e.Key()] {
			continue
		}
		if _, err := m.fs.Stat(m.fs.PathJoin(m.opts.Dir, objstorage.ObjectName(e.Type, e.Num))); err == nil {
			continue
		}
		todo = append(todo, e)
		total += e.Size
	}
	var done int64
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, m.opts.UploadConcurrency)
	var wg sync.WaitGroup
	for _, e := range todo {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := m.hydrateOne(ctx, e)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			done += e.Size
			if o.Progress != nil {
				o.Progress(done, total)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (m *Manager) hydrateOne(ctx context.Context, e catalog.Entry) error {
	k := e.Key()
	if err := m.acquire(ctx, k); err != nil {
		return err
	}
	gone := false
	defer func() {
		if m.release(k) || gone {
			_ = m.local.Remove(k.Type, k.Num)
		}
	}()
	if _, ok := m.cat.Get(k); !ok {
		return nil // removed by the engine
	}
	what := objstorage.ObjectName(e.Type, e.Num)
	name := m.objectName(e.Type, e.Num)
	// NB: the copy is written without fsync: it is a cache of a verified
	// remote object. The dirty marker makes the next Open after a crash
	// verify it (and delete it if torn); Close syncs it.
	if err := m.markDirty(); err != nil {
		return err
	}
	final := m.fs.PathJoin(m.opts.Dir, what)
	tmp := final + ".hyd.tmp"
	get := func(b objectstore.Bucket) func(ctx context.Context) (io.ReadCloser, error) {
		return func(ctx context.Context) (io.ReadCloser, error) { return b.Get(ctx, name) }
	}
	// Through the fallback combinator: a primary that fails, lost the
	// object or is slower than HedgeDelay is replaced by the fallback.
	err := m.download(ctx, e, tmp, final, m.reads, get(m.reads.b))
	if errors.Is(err, errBadDownload) && m.opts.Fallback != nil && ctx.Err() == nil {
		// The primary served bytes that fail verification: a store
		// error the combinator cannot see. Ask the fallback itself.
		m.m.fallbackReads.Add(1)
		fb := objectstore.WithRetry(m.opts.Fallback, m.opts.Retry)
		if ferr := m.download(ctx, e, tmp, final, m.reads, get(fb)); ferr == nil {
			m.m.fallbackBytes.Add(uint64(e.Size))
			err = nil
		} else {
			err = errors.Join(err, fmt.Errorf("fallback: %w", ferr))
		}
	}
	if err != nil {
		return fmt.Errorf("tiering: hydrate %s: %w", what, err)
	}
	if _, ok := m.cat.Get(k); !ok {
		gone = true
		return nil
	}
	m.m.hydratedBytes.Add(uint64(e.Size))
	m.m.hydratedObjects.Add(1)
	m.mu.Lock()
	open := append([]*remoteReadable(nil), m.mu.open[k]...)
	m.mu.Unlock()
	for _, r := range open {
		r.switchToLocal(ctx)
	}
	return nil
}

// errBadDownload marks a download whose size or CRC32C is not the
// catalog's.
var errBadDownload = errors.New("downloaded object fails verification")

// download writes object e, read with open, to tmp, verifies its size and
// CRC32C against the catalog and renames it to final. A transient error
// while streaming starts again (r.stream).
func (m *Manager) download(ctx context.Context, e catalog.Entry, tmp, final string, r *reads, open func(ctx context.Context) (io.ReadCloser, error)) error {
	err := r.stream(ctx, open, func(rd io.Reader) error {
		f, err := m.fs.Create(tmp)
		if err != nil {
			return err
		}
		// Advisory: reserving the extent up front makes the writes
		// cheaper where the file system supports it.
		_ = f.Preallocate(0, e.Size)
		n, crc, err := copyCRC(f, rd, make([]byte, hydrateBufSize))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && (n != e.Size || crc != e.CRC) {
			err = fmt.Errorf("%w: %d bytes with crc32c %#08x, want %d bytes with %#08x", errBadDownload, n, crc, e.Size, e.CRC)
		}
		return err
	})
	if err == nil {
		err = m.fs.Rename(tmp, final)
	}
	if err != nil {
		_ = m.fs.Remove(tmp)
		return err
	}
	m.mu.Lock()
	m.mu.unsynced = append(m.mu.unsynced, final)
	m.mu.Unlock()
	return nil
}

// dirtyName is the marker of hydrated copies not yet synced.
const dirtyName = "TIERDIRTY"

// markDirty creates the dirty marker (synced) once.
func (m *Manager) markDirty() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.dirty {
		return nil
	}
	if err := vfs.WriteFileAtomic(m.fs, m.fs.PathJoin(m.opts.Dir, dirtyName), nil); err != nil {
		return fmt.Errorf("tiering: create %s: %w", dirtyName, err)
	}
	m.mu.dirty = true
	return nil
}

// syncHydrated makes the hydrated copies durable and removes the marker.
func (m *Manager) syncHydrated() error {
	m.mu.Lock()
	files, dirty := m.mu.unsynced, m.mu.dirty
	m.mu.unsynced, m.mu.dirty = nil, false
	m.mu.Unlock()
	if !dirty {
		return nil
	}
	for _, path := range files {
		f, err := m.fs.OpenReadWrite(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed by the engine since
		}
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("tiering: sync %s: %w", path, err)
		}
	}
	if err := vfs.SyncDir(m.fs, m.opts.Dir); err != nil {
		return err
	}
	if err := m.fs.Remove(m.fs.PathJoin(m.opts.Dir, dirtyName)); err != nil {
		return err
	}
	return vfs.SyncDir(m.fs, m.opts.Dir)
}

// verifyLocalCopies runs at Open after an unclean shutdown that may have
// left torn hydrated copies: every local copy of a remote object is checked
// against the catalog's size and CRC32C, and deleted if it does not match
// (the object is then served remotely).
func (m *Manager) verifyLocalCopies() error {
	ctx := context.Background()
	for _, e := range m.cat.Entries() {
		r, err := m.local.Open(ctx, e.Type, e.Num)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		ok := r.Size() == e.Size
		if ok {
			crc := uint32(0)
			buf := make([]byte, 1<<20)
			for off := int64(0); off < e.Size && ok; off += int64(len(buf)) {
				b := buf[:min(int64(len(buf)), e.Size-off)]
				if err := r.ReadAt(ctx, b, off); err != nil {
					ok = false
					break
				}
				crc = crc32.Update(crc, castagnoli, b)
			}
			ok = ok && crc == e.CRC
		}
		r.Close()
		if !ok {
			m.opts.Logger.Warn("tiering: deleting torn local copy of a remote object", "file", objstorage.ObjectName(e.Type, e.Num))
			if err := m.local.Remove(e.Type, e.Num); err != nil {
				return err
			}
		}
	}
	return nil
}

// hydrateBufSize is the size of hydration's reads and writes. Small enough
// to stay in the CPU's cache between the socket read, the CRC and the copy
// into the page cache; large enough that syscalls cost little. Measured on
// the development VM (ext4, Linux 6.18, 2 cores): page-cache writes of
// 256 KiB cost 0.25 s of CPU per GiB, of 1 MiB 0.25-0.9 s, of 2 MiB up to
// 2 s (docs/tiering.md, "Benchmark").
const hydrateBufSize = 256 << 10

// copyCRC copies src to dst through buf and returns the number of bytes
// and their CRC32C, computed on each buffer before it is written (while
// it is in the CPU cache). One goroutine: on few cores, handing buffers
// to a writer goroutine costs more than it overlaps.
func copyCRC(dst io.Writer, src io.Reader, buf []byte) (n int64, crc uint32, err error) {
	for {
		k, rerr := io.ReadFull(src, buf)
		if k > 0 {
			crc = crc32.Update(crc, castagnoli, buf[:k])
			if _, err := dst.Write(buf[:k]); err != nil {
				return n, crc, err
			}
			n += int64(k)
		}
		switch rerr {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return n, crc, nil
		default:
			return n, crc, rerr
		}
	}
}
