package lsm

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/internal/blob"
	"github.com/tierkv/tierkv/lsm/internal/manifest"
	"github.com/tierkv/tierkv/lsm/internal/sstable"
	"github.com/tierkv/tierkv/lsm/internal/wal"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// This file holds the hooks the tiering package needs: where an object's
// metadata starts (kept on local disk for remote objects), and consistent
// manifest snapshots for backups and restores.

// ObjectMetaOffset returns the offset from which the engine reads an
// object's metadata when it opens it: for a table, the start of its bloom
// filter (the bloom, index and properties blocks and the footer follow);
// for a blob file, its footer (a former WAL segment has none: the last
// bytes are then ordinary data, which is harmless). Reads at or after the
// offset are the only reads of an open; a point lookup of an absent key
// reads nothing else. It reads the table footer through r.
func ObjectMetaOffset(ctx context.Context, typ objstorage.FileType, num uint64, r objstorage.Readable) (int64, error) {
	switch typ {
	case objstorage.FileTypeTable:
		return sstable.MetaOffset(ctx, r, objstorage.ObjectName(typ, num))
	case objstorage.FileTypeBlob:
		return max(0, r.Size()-blob.FooterLen), nil
	}
	return 0, fmt.Errorf("lsm: unknown file type %d", typ)
}

// ManifestSnapshot is a consistent snapshot of the engine's metadata: the
// encoded manifest edit that recreates the current version, and the objects
// it references. Every object it names was durable when it was taken.
type ManifestSnapshot struct {
	// Data is the encoded snapshot. Pass it to WriteManifestSnapshot to
	// create a DB directory that opens with exactly these tables.
	Data []byte
	// Tables and Blobs are the file numbers of the referenced objects.
	Tables, Blobs []uint64
	// NextFileNum is the smallest file number the engine had not used.
	NextFileNum uint64
}

// ManifestSnapshot returns a snapshot of the current version. It does not
// include memtables: call Flush first to cover every acknowledged write.
func (d *DB) ManifestSnapshot() (*ManifestSnapshot, error) {
	d.manifestMu.Lock()
	defer d.manifestMu.Unlock()
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return nil, ErrClosed
	}
	v := d.mu.current
	v.ref()
	logNum := d.oldestLogLocked()
	next := d.mu.nextFileNum
	d.mu.Unlock()
	defer v.unref(d)
	snap := v.v.Snapshot()
	snap.LogNum = logNum
	snap.NextFileNum = next
	return snapshotOf(snap.Encode(nil), snap)
}

func snapshotOf(data []byte, e *manifest.VersionEdit) (*ManifestSnapshot, error) {
	s := &ManifestSnapshot{Data: data, NextFileNum: uint64(e.NextFileNum)}
	for _, a := range e.Added {
		s.Tables = append(s.Tables, uint64(a.Meta.FileNum))
	}
	for _, b := range e.AddedBlobs {
		s.Blobs = append(s.Blobs, uint64(b.FileNum))
	}
	return s, nil
}

// ParseManifestSnapshot decodes the Data of a ManifestSnapshot. Bad bytes
// give an error wrapping ErrCorruption.
func ParseManifestSnapshot(data []byte) (*ManifestSnapshot, error) {
	e, err := manifest.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("lsm: manifest snapshot: %w", err)
	}
	if len(e.Deleted) > 0 || len(e.DeletedBlobs) > 0 {
		return nil, base.CorruptionErrorf("lsm: manifest snapshot deletes files")
	}
	if _, err := (&manifest.Version{}).Apply(e); err != nil {
		return nil, base.CorruptionErrorf("lsm: manifest snapshot: %v", err)
	}
	return snapshotOf(data, e)
}

// WriteManifestSnapshot creates the metadata of a DB in dir (a MANIFEST
// holding the snapshot, and CURRENT) so that Open finds exactly the
// snapshot's tables and blob files; their objects must be reachable through
// Options.Provider. minNextFileNum raises the next file number, so that the
// new DB never reuses a number the old one may have used after the
// snapshot. dir must not hold a DB already.
func WriteManifestSnapshot(fs vfs.FS, dir string, data []byte, minNextFileNum uint64) error {
	e, err := manifest.Decode(data)
	if err != nil {
		return fmt.Errorf("lsm: manifest snapshot: %w", err)
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lsm: create %s: %w", dir, err)
	}
	if _, err := fs.Stat(fs.PathJoin(dir, currentName)); err == nil {
		return fmt.Errorf("lsm: %s already holds a DB", dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lsm: stat %s: %w", currentName, err)
	}
	e.NextFileNum = base.FileNum(max(uint64(e.NextFileNum), minNextFileNum))
	num := e.NextFileNum
	e.NextFileNum++
	mo := wal.Options{FS: fs, Dir: dir, PreallocateSize: 1 << 20, Logger: discardLogger}
	w, err := wal.CreateAt(mo, fs.PathJoin(dir, manifestName(num)), num)
	if err != nil {
		return fmt.Errorf("lsm: create manifest: %w", err)
	}
	if err := w.Append(e.Encode(nil), true); err != nil {
		w.Close()
		return fmt.Errorf("lsm: write manifest: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("lsm: close manifest: %w", err)
	}
	if err := vfs.WriteFileAtomic(fs, fs.PathJoin(dir, currentName), []byte(manifestName(num)+"\n")); err != nil {
		return fmt.Errorf("lsm: write %s: %w", currentName, err)
	}
	return nil
}
