package vfs

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// MemFS is an in-memory FS that models durability the way a POSIX file
// system with a volatile page cache does:
//
//   - a file's contents survive a crash only up to its last Sync;
//   - a created, renamed or removed directory entry survives a crash only
//     once its directory was synced (SyncDir).
//
// CrashClone returns the state that a crash at this instant could leave.
// Directories made by MkdirAll are durable at once (the engine creates its
// directory once, before anything else).
type MemFS struct {
	mu struct {
		sync.Mutex
		dirs  map[string]*memDir
		locks map[string]bool
	}
}

type memDir struct {
	cur    map[string]*memNode // what a directory listing shows now
	synced map[string]*memNode // what survives a crash
}

type memNode struct {
	mu      sync.Mutex
	data    []byte // current contents
	durable []byte // contents as of the last Sync
	modTime time.Time
}

var _ FS = (*MemFS)(nil)

// NewMemFS returns an empty MemFS with a root directory "/" and ".".
func NewMemFS() *MemFS {
	fs := &MemFS{}
	fs.mu.dirs = map[string]*memDir{}
	fs.mu.locks = map[string]bool{}
	fs.mkdirLocked("/")
	fs.mkdirLocked(".")
	return fs
}

func (fs *MemFS) mkdirLocked(dir string) {
	if _, ok := fs.mu.dirs[dir]; !ok {
		fs.mu.dirs[dir] = &memDir{cur: map[string]*memNode{}, synced: map[string]*memNode{}}
	}
}

func splitPath(name string) (dir, base string) {
	name = filepath.Clean(name)
	return filepath.Dir(name), filepath.Base(name)
}

func (fs *MemFS) lookupLocked(name string) (*memDir, string, *memNode, error) {
	dir, base := splitPath(name)
	d, ok := fs.mu.dirs[dir]
	if !ok {
		return nil, "", nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	}
	return d, base, d.cur[base], nil
}

// Create is part of the FS interface.
func (fs *MemFS) Create(name string) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, base, _, err := fs.lookupLocked(name)
	if err != nil {
		return nil, err
	}
	n := &memNode{modTime: time.Now()}
	d.cur[base] = n
	return &memFile{node: n, name: name, write: true}, nil
}

// Open is part of the FS interface.
func (fs *MemFS) Open(name string) (File, error) {
	return fs.open(name, false)
}

// OpenReadWrite is part of the FS interface.
func (fs *MemFS) OpenReadWrite(name string) (File, error) {
	return fs.open(name, true)
}

func (fs *MemFS) open(name string, write bool) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	_, _, n, err := fs.lookupLocked(name)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	}
	return &memFile{node: n, name: name, write: write}, nil
}

// OpenDir is part of the FS interface.
func (fs *MemFS) OpenDir(name string) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = filepath.Clean(name)
	if _, ok := fs.mu.dirs[name]; !ok {
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	}
	return &memDirFile{fs: fs, name: name}, nil
}

// Remove is part of the FS interface.
func (fs *MemFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, base, n, err := fs.lookupLocked(name)
	if err != nil {
		return err
	}
	if n == nil {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(d.cur, base)
	return nil
}

// Rename is part of the FS interface.
func (fs *MemFS) Rename(oldname, newname string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	od, obase, n, err := fs.lookupLocked(oldname)
	if err != nil {
		return err
	}
	if n == nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: os.ErrNotExist}
	}
	nd, nbase, _, err := fs.lookupLocked(newname)
	if err != nil {
		return err
	}
	delete(od.cur, obase)
	nd.cur[nbase] = n
	return nil
}

// MkdirAll is part of the FS interface.
func (fs *MemFS) MkdirAll(dir string, perm os.FileMode) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = filepath.Clean(dir)
	for {
		fs.mkdirLocked(dir)
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
}

// List is part of the FS interface.
func (fs *MemFS) List(dir string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, ok := fs.mu.dirs[filepath.Clean(dir)]
	if !ok {
		return nil, &os.PathError{Op: "readdir", Path: dir, Err: os.ErrNotExist}
	}
	names := make([]string, 0, len(d.cur))
	for name := range d.cur {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

// Stat is part of the FS interface.
func (fs *MemFS) Stat(name string) (os.FileInfo, error) {
	fs.mu.Lock()
	_, _, n, err := fs.lookupLocked(name)
	fs.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, &os.PathError{Op: "stat", Path: name, Err: os.ErrNotExist}
	}
	return n.stat(filepath.Base(name)), nil
}

// Lock is part of the FS interface. Locks are not files: a CrashClone
// starts with none held, as a restarted process would.
func (fs *MemFS) Lock(name string) (io.Closer, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = filepath.Clean(name)
	if fs.mu.locks[name] {
		return nil, fmt.Errorf("lock %s: held by another user of this MemFS", name)
	}
	fs.mu.locks[name] = true
	return memLock(func() { fs.mu.Lock(); delete(fs.mu.locks, name); fs.mu.Unlock() }), nil
}

type memLock func()

func (l memLock) Close() error { l(); return nil }

// PathJoin is part of the FS interface.
func (fs *MemFS) PathJoin(elem ...string) string { return filepath.Join(elem...) }

// CrashClone returns a new MemFS holding what a crash at this instant could
// leave behind: synced directory entries and synced file contents. If rng is
// not nil, each file also keeps a random prefix of the data appended since its
// last sync, as a real disk may (a torn tail).
func (fs *MemFS) CrashClone(rng *rand.Rand) *MemFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c := NewMemFS()
	seen := map[*memNode]*memNode{}
	dirs := make([]string, 0, len(fs.mu.dirs))
	for name := range fs.mu.dirs {
		dirs = append(dirs, name)
	}
	sort.Strings(dirs) // deterministic use of rng
	for _, name := range dirs {
		d := fs.mu.dirs[name]
		c.mkdirLocked(name)
		cd := c.mu.dirs[name]
		bases := make([]string, 0, len(d.synced))
		for b := range d.synced {
			bases = append(bases, b)
		}
		sort.Strings(bases)
		for _, b := range bases {
			n := d.synced[b]
			cn, ok := seen[n]
			if !ok {
				cn = n.crashCopy(rng)
				seen[n] = cn
			}
			cd.cur[b] = cn
			cd.synced[b] = cn
		}
	}
	return c
}

func (n *memNode) crashCopy(rng *rand.Rand) *memNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	data := append([]byte(nil), n.durable...)
	if rng != nil && len(n.data) > len(n.durable) && string(n.data[:len(n.durable)]) == string(n.durable) {
		extra := n.data[len(n.durable):]
		data = append(data, extra[:rng.IntN(len(extra)+1)]...)
	}
	return &memNode{data: data, durable: append([]byte(nil), data...), modTime: n.modTime}
}

func (n *memNode) stat(name string) os.FileInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return memFileInfo{name: name, size: int64(len(n.data)), modTime: n.modTime}
}

type memFile struct {
	node  *memNode
	name  string
	off   int64 // for Read and Write
	write bool
}

var errReadOnly = errors.New("vfs: file opened read-only")

func (f *memFile) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.node.mu.Lock()
	defer f.node.mu.Unlock()
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	if !f.write {
		return 0, errReadOnly
	}
	f.node.mu.Lock()
	defer f.node.mu.Unlock()
	end := f.off + int64(len(p))
	if end > int64(len(f.node.data)) {
		if end > int64(cap(f.node.data)) {
			grown := make([]byte, end, max(end, 2*int64(cap(f.node.data))))
			copy(grown, f.node.data)
			f.node.data = grown
		} else {
			f.node.data = f.node.data[:end]
		}
	}
	copy(f.node.data[f.off:], p)
	f.off = end
	f.node.modTime = time.Now()
	return len(p), nil
}

func (f *memFile) Sync() error {
	f.node.mu.Lock()
	defer f.node.mu.Unlock()
	f.node.durable = append(f.node.durable[:0], f.node.data...)
	return nil
}

func (f *memFile) Truncate(size int64) error {
	if !f.write {
		return errReadOnly
	}
	f.node.mu.Lock()
	defer f.node.mu.Unlock()
	if size <= int64(len(f.node.data)) {
		f.node.data = f.node.data[:size]
	} else {
		f.node.data = append(f.node.data, make([]byte, size-int64(len(f.node.data)))...)
	}
	return nil
}

func (f *memFile) Preallocate(off, n int64) error { return nil }
func (f *memFile) Close() error                   { return nil }
func (f *memFile) Stat() (os.FileInfo, error)     { return f.node.stat(filepath.Base(f.name)), nil }

// memDirFile is an open directory; its Sync makes the directory's current
// entries durable.
type memDirFile struct {
	fs   *MemFS
	name string
}

func (d *memDirFile) Sync() error {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	dir := d.fs.mu.dirs[d.name]
	dir.synced = make(map[string]*memNode, len(dir.cur))
	for k, v := range dir.cur {
		dir.synced[k] = v
	}
	return nil
}

func (d *memDirFile) Read([]byte) (int, error) { return 0, errors.New("vfs: read of a directory") }
func (d *memDirFile) ReadAt([]byte, int64) (int, error) {
	return 0, errors.New("vfs: read of a directory")
}
func (d *memDirFile) Write([]byte) (int, error)      { return 0, errors.New("vfs: write to a directory") }
func (d *memDirFile) Truncate(int64) error           { return errors.New("vfs: truncate of a directory") }
func (d *memDirFile) Preallocate(int64, int64) error { return nil }
func (d *memDirFile) Close() error                   { return nil }
func (d *memDirFile) Stat() (os.FileInfo, error) {
	return memFileInfo{name: filepath.Base(d.name), dir: true}, nil
}

type memFileInfo struct {
	name    string
	size    int64
	modTime time.Time
	dir     bool
}

func (i memFileInfo) Name() string       { return i.name }
func (i memFileInfo) Size() int64        { return i.size }
func (i memFileInfo) ModTime() time.Time { return i.modTime }
func (i memFileInfo) IsDir() bool        { return i.dir }
func (i memFileInfo) Sys() any           { return nil }
func (i memFileInfo) Mode() os.FileMode {
	if i.dir {
		return os.ModeDir | 0o755
	}
	return 0o644
}
