package objstorage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/tierkv/tierkv/lsm/vfs"
)

// NewLocal returns a Provider that keeps objects as files in dir of fs.
// Objects are written under a temporary name, synced, renamed and made
// durable with a directory sync.
func NewLocal(fs vfs.FS, dir string) Provider {
	return &local{fs: fs, dir: dir}
}

type local struct {
	fs  vfs.FS
	dir string
}

var _ Provider = (*local)(nil)

func (l *local) path(typ FileType, num uint64) string {
	return l.fs.PathJoin(l.dir, ObjectName(typ, num))
}

// Create is part of the Provider interface.
func (l *local) Create(ctx context.Context, typ FileType, num uint64) (Writable, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	final := l.path(typ, num)
	tmp := final + ".tmp"
	f, err := l.fs.Create(tmp)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", tmp, err)
	}
	return &localWritable{l: l, f: f, tmp: tmp, final: final, bw: bufio.NewWriterSize(vfs.NewPacedWriter(f, bytesPerSync), 256<<10)}, nil
}

// Open is part of the Provider interface.
func (l *local) Open(ctx context.Context, typ FileType, num uint64) (Readable, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name := l.path(typ, num)
	f, err := l.fs.Open(name)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", name, err)
	}
	r := &localReadable{f: f, name: name, size: st.Size()}
	r.mapFile()
	return r, nil
}

// Remove is part of the Provider interface.
func (l *local) Remove(typ FileType, num uint64) error {
	err := l.fs.Remove(l.path(typ, num))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// List is part of the Provider interface.
func (l *local) List(typ FileType) ([]uint64, error) {
	names, err := l.fs.List(l.dir)
	if err != nil {
		return nil, err
	}
	suffix := strings.TrimPrefix(ObjectName(typ, 0), "000000")
	var nums []uint64
	for _, n := range names {
		if !strings.HasSuffix(n, suffix) {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSuffix(n, suffix), 10, 64)
		if err == nil {
			nums = append(nums, v)
		}
	}
	return nums, nil
}

// bytesPerSync paces the write-back of objects being written (tables and
// blob files of flushes and compactions): see vfs.NewPacedWriter. 1 MiB is
// Pebble's and RocksDB's order of magnitude (512 KiB and 1 MiB): small
// enough that a WAL sync never waits behind more than a few megabytes of
// compaction output, large enough to cost one system call per megabyte.
const bytesPerSync = 1 << 20

type localWritable struct {
	l          *local
	f          vfs.File
	bw         *bufio.Writer
	tmp, final string
	done       bool
}

func (w *localWritable) Write(p []byte) error {
	_, err := w.bw.Write(p)
	return err
}

func (w *localWritable) Finish() error {
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", w.tmp, err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", w.tmp, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", w.tmp, err)
	}
	w.f = nil
	if err := w.l.fs.Rename(w.tmp, w.final); err != nil {
		return err
	}
	if err := vfs.SyncDir(w.l.fs, w.l.dir); err != nil {
		return fmt.Errorf("sync dir %s: %w", w.l.dir, err)
	}
	w.done = true
	return nil
}

func (w *localWritable) Abort() {
	if w.done {
		return
	}
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	_ = w.l.fs.Remove(w.tmp)
}

type localReadable struct {
	f    vfs.File
	name string
	size int64
	// mapped is the file mapped read-only, when the file is an OS file.
	// Objects are immutable once finished, so the mapping never changes
	// under a reader; a read is a memcpy instead of a pread syscall.
	mapped []byte
}

// mapFile maps OS files read-only; it leaves mapped nil where that is not
// possible (MemFS, empty files, mmap failure), and reads use ReadAt.
func (r *localReadable) mapFile() {
	fd, ok := r.f.(interface{ Fd() uintptr })
	if !ok || r.size == 0 || r.size > maxMappedSize {
		return
	}
	m, err := syscall.Mmap(int(fd.Fd()), 0, int(r.size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err == nil {
		r.mapped = m
	}
}

// maxMappedSize bounds the objects that are mapped (address space is
// plentiful on 64-bit hosts; this only guards absurd sizes).
const maxMappedSize = 1 << 40

func (r *localReadable) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := r.check(p, off); err != nil {
		return err
	}
	if r.mapped != nil {
		copy(p, r.mapped[off:])
		return nil
	}
	return r.pread(p, off)
}

// readOnce is ReadOnce's: pread, whether or not the file is mapped.
func (r *localReadable) readOnce(ctx context.Context, p []byte, off int64) error {
	if err := r.check(p, off); err != nil {
		return err
	}
	return r.pread(p, off)
}

func (r *localReadable) check(p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > r.size {
		return fmt.Errorf("read %s [%d, %d): beyond size %d", r.name, off, off+int64(len(p)), r.size)
	}
	return nil
}

func (r *localReadable) pread(p []byte, off int64) error {
	n, err := r.f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %s at %d: %w", r.name, off, err)
}

func (r *localReadable) Size() int64 { return r.size }
func (r *localReadable) Close() error {
	if r.mapped != nil {
		_ = syscall.Munmap(r.mapped)
		r.mapped = nil
	}
	return r.f.Close()
}
