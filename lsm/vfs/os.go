package vfs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

type osFS struct{}

var _ FS = osFS{}

type osFile struct{ *os.File }

// Sync uses fdatasync: the engine never relies on metadata other than the
// size, which fdatasync also persists.
func (f osFile) Sync() error { return syscall.Fdatasync(int(f.Fd())) }

func (f osFile) Preallocate(off, n int64) error {
	// NB: mode 1 is FALLOC_FL_KEEP_SIZE; the size stays as written so that
	// readers of the file see only real data. Errors (for example on file
	// systems without fallocate) are ignored: preallocation is advisory.
	_ = syscall.Fallocate(int(f.Fd()), 1, off, n)
	return nil
}

// SyncRange is part of the RangeSyncer interface: sync_file_range with
// WAIT_BEFORE | WRITE | WAIT_AFTER writes the range back and waits for it,
// without the metadata and device cache flush of fdatasync.
func (f osFile) SyncRange(off, n int64) error {
	const flags = 1 | 2 | 4 // SYNC_FILE_RANGE_WAIT_BEFORE | _WRITE | _WAIT_AFTER
	return syscall.SyncFileRange(int(f.Fd()), off, n, flags)
}

type osDir struct{ *os.File }

func (d osDir) Sync() error                    { return d.File.Sync() }
func (d osDir) Preallocate(off, n int64) error { return nil }

func (osFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Open(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) OpenReadWrite(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) OpenDir(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return osDir{f}, nil
}

func (osFS) Remove(name string) error                    { return os.Remove(name) }
func (osFS) Rename(oldname, newname string) error        { return os.Rename(oldname, newname) }
func (osFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }
func (osFS) Stat(name string) (os.FileInfo, error)       { return os.Stat(name) }
func (osFS) PathJoin(elem ...string) string              { return filepath.Join(elem...) }

func (osFS) Lock(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w (is another process using this directory?)", name, err)
	}
	return f, nil
}

func (osFS) List(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}
