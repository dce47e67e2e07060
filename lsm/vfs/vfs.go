// Package vfs is the file-system seam of the lsm engine. The engine does all
// of its local I/O through FS, so that tests can substitute MemFS (which
// models exactly what survives a crash) or an error-injecting wrapper.
package vfs

import (
	"io"
	"os"
	"path/filepath"
)

// File is an open file. Implementations are safe for concurrent ReadAt calls;
// Write, Sync and Truncate must not be called concurrently with each other.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.Closer

	// Sync makes the file's contents durable (fdatasync where available).
	// Only data written before Sync returned nil survives a crash.
	Sync() error
	// Stat returns the file's metadata.
	Stat() (os.FileInfo, error)
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Preallocate reserves space for [off, off+n) without changing the
	// file's size where the platform allows it. It is advisory: an
	// implementation may do nothing.
	Preallocate(off, n int64) error
}

// RangeSyncer is implemented by files that can write a byte range back to
// the disk ahead of Sync (Linux sync_file_range). It makes nothing durable:
// only Sync does. Writers of large files use it to spread their write-back
// over the write (NewPacedWriter) instead of handing the disk one burst at
// Sync, which the WAL's syncs would queue behind.
type RangeSyncer interface {
	// SyncRange writes [off, off+n) back and waits until it is written.
	SyncRange(off, n int64) error
}

// NewPacedWriter returns a writer to f that, after every bytesPerSync bytes,
// writes the previous bytesPerSync back with RangeSyncer.SyncRange, so that
// at most about two such chunks of f are dirty at any time. Where f is not a
// RangeSyncer, or bytesPerSync <= 0, it returns f. A failed SyncRange is
// ignored: the final Sync reports write-back errors.
func NewPacedWriter(f File, bytesPerSync int64) io.Writer {
	rs, ok := f.(RangeSyncer)
	if !ok || bytesPerSync <= 0 {
		return f
	}
	return &pacedWriter{f: f, rs: rs, every: bytesPerSync}
}

type pacedWriter struct {
	f      File
	rs     RangeSyncer
	every  int64
	off    int64 // bytes written
	synced int64 // bytes written back by SyncRange
}

func (w *pacedWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	// Write back the chunk before the one being filled.
	for w.off-w.synced >= 2*w.every {
		_ = w.rs.SyncRange(w.synced, w.every)
		w.synced += w.every
	}
	return n, err
}

// FS is a file system. Names are slash- or OS-separated paths; the engine
// builds them with PathJoin.
type FS interface {
	// Create creates or truncates the named file for writing.
	Create(name string) (File, error)
	// Open opens the named file for reading.
	Open(name string) (File, error)
	// OpenReadWrite opens an existing file for reading and writing without
	// truncating it. Writes start at offset 0.
	OpenReadWrite(name string) (File, error)
	// OpenDir opens a directory so that it can be synced: a created,
	// renamed or removed entry is durable only after its directory's Sync.
	OpenDir(name string) (File, error)
	// Remove removes the named file or empty directory.
	Remove(name string) error
	// Rename atomically renames oldname to newname, replacing newname.
	Rename(oldname, newname string) error
	// MkdirAll creates a directory and its parents.
	MkdirAll(dir string, perm os.FileMode) error
	// List returns the names (not paths) of the entries in dir, sorted.
	List(dir string) ([]string, error)
	// Stat returns metadata of the named file.
	Stat(name string) (os.FileInfo, error)
	// PathJoin joins path elements.
	PathJoin(elem ...string) string
	// Lock takes an exclusive lock on the named file, creating it if
	// needed, so that two processes never open one DB. It fails at once if
	// the lock is held. Close releases it.
	Lock(name string) (io.Closer, error)
}

// Default is the operating system's file system.
var Default FS = osFS{}

// SyncDir syncs the directory dir of fs.
func SyncDir(fs FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// WriteFileAtomic writes data to name through a temporary file that is
// synced, renamed over name, and made durable with a directory sync. A crash
// leaves either the old or the new contents, never a mix.
func WriteFileAtomic(fs FS, name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := fs.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fs.Rename(tmp, name); err != nil {
		return err
	}
	return SyncDir(fs, filepath.Dir(name))
}
