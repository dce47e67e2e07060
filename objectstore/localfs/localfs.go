// Package localfs is an objectstore.Bucket on a local directory: tierkv's
// embedded default object store.
//
// An object "a/b/c" is the file ROOT/a/b/c. Put writes a temporary file in
// the object's directory, fsyncs it, renames it over the final name and
// fsyncs the directory (and any directory it created), so a reader or a
// crash sees the old object or the new one, never a part. Temporary files
// start with TempPrefix; List never shows them and Open removes those left
// by a crash.
//
// Limitation: because objects are files, an object cannot also be a
// "directory" of other objects: with "a/b" stored, Put("a") fails, and with
// "a" stored, Put("a/b") fails (S3 allows both). tierkv's names never do this.
package localfs

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/tierkv/tierkv/objectstore"
)

// TempPrefix starts the names of temporary files. Object names with a
// segment that starts with it are rejected.
const TempPrefix = ".tierkv-tmp-"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Bucket is a Bucket on a directory. Create it with Open.
type Bucket struct {
	root   string
	closed atomic.Bool
}

var _ objectstore.Bucket = (*Bucket)(nil)

// Open returns a Bucket rooted at dir, creating dir if needed, and removes
// temporary files left by interrupted uploads.
func Open(dir string) (*Bucket, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("objectstore/localfs: open %s: %w", dir, err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("objectstore/localfs: open %s: %w", dir, err)
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), TempPrefix) {
			return os.Remove(path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("objectstore/localfs: open %s: removing temporary files: %w", dir, err)
	}
	return &Bucket{root: root}, nil
}

func opError(op, name string, err error) error {
	return fmt.Errorf("objectstore/localfs: %s %s: %w", op, name, err)
}

// path validates name and returns its file path.
func (b *Bucket) path(ctx context.Context, op, name string) (string, error) {
	if err := objectstore.ValidateName(name); err != nil {
		return "", opError(op, name, err)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(seg, TempPrefix) {
			return "", opError(op, name, fmt.Errorf("%w: segment starts with the reserved %q", objectstore.ErrInvalidName, TempPrefix))
		}
	}
	if b.closed.Load() {
		return "", opError(op, name, objectstore.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return "", opError(op, name, err)
	}
	return filepath.Join(b.root, filepath.FromSlash(name)), nil
}

// isNotExist reports whether err means the path is not there, including
// "a/b" when "a" is a file.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Put is part of the objectstore.Bucket interface.
func (b *Bucket) Put(ctx context.Context, name string, r io.Reader, size int64) (err error) {
	path, err := b.path(ctx, "put", name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	var f *os.File
	// A concurrent Delete may remove an empty directory between mkdirAll and
	// CreateTemp; try again a few times.
	for attempt := 0; ; attempt++ {
		if err := b.mkdirAll(dir); err != nil {
			if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrExist) {
				err = fmt.Errorf("%w: a prefix of the name is an object: %w", objectstore.ErrInvalidName, err)
			}
			return opError("put", name, err)
		}
		f, err = os.CreateTemp(dir, TempPrefix+"*")
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt >= 10 {
			return opError("put", name, err)
		}
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, objectstore.SizedReader(objectstore.ContextReader(ctx, r), size)); err != nil {
		return opError("put", name, err)
	}
	if err := f.Sync(); err != nil {
		return opError("put", name, err)
	}
	if err := f.Close(); err != nil {
		return opError("put", name, err)
	}
	if err := ctx.Err(); err != nil {
		return opError("put", name, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
			err = fmt.Errorf("%w: the name is a prefix of other objects: %w", objectstore.ErrInvalidName, err)
		}
		return opError("put", name, err)
	}
	if err := syncDir(dir); err != nil {
		return opError("put", name, err)
	}
	return nil
}

// mkdirAll creates dir and its missing parents, fsyncing the parent of each
// directory it creates so that the new entries are durable.
func (b *Bucket) mkdirAll(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: %w", dir, syscall.ENOTDIR)
		}
		return nil
	}
	if dir == b.root || !strings.HasPrefix(dir, b.root) {
		return os.MkdirAll(dir, 0o755)
	}
	parent := filepath.Dir(dir)
	if err := b.mkdirAll(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
				return nil // created concurrently
			}
		}
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// open opens the object's file, mapping a missing file or a directory to
// ErrNotExist.
func (b *Bucket) open(ctx context.Context, op, name string) (*os.File, int64, error) {
	path, err := b.path(ctx, op, name)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		if isNotExist(err) {
			return nil, 0, opError(op, name, objectstore.ErrNotExist)
		}
		return nil, 0, opError(op, name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, opError(op, name, err)
	}
	if fi.IsDir() {
		f.Close()
		return nil, 0, opError(op, name, objectstore.ErrNotExist)
	}
	return f, fi.Size(), nil
}

// Get is part of the objectstore.Bucket interface.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	f, _, err := b.open(ctx, "get", name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

type sectionReadCloser struct {
	io.Reader
	io.Closer
}

// GetRange is part of the objectstore.Bucket interface.
func (b *Bucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	f, size, err := b.open(ctx, "get", name)
	if err != nil {
		return nil, err
	}
	end, err := objectstore.RangeEnd(size, off, length)
	if err != nil {
		f.Close()
		return nil, opError("get", name, err)
	}
	return sectionReadCloser{io.NewSectionReader(f, off, end-off), f}, nil
}

// Attributes is part of the objectstore.Bucket interface. It reads the
// whole file to compute the CRC32C.
func (b *Bucket) Attributes(ctx context.Context, name string) (objectstore.Attributes, error) {
	f, _, err := b.open(ctx, "attributes", name)
	if err != nil {
		return objectstore.Attributes{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return objectstore.Attributes{}, opError("attributes", name, err)
	}
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, objectstore.ContextReader(ctx, f)); err != nil {
		return objectstore.Attributes{}, opError("attributes", name, err)
	}
	return objectstore.Attributes{
		Size:         fi.Size(),
		LastModified: fi.ModTime(),
		ETag:         fmt.Sprintf("%08x", h.Sum32()),
		CRC32C:       h.Sum32(),
		HasCRC32C:    true,
	}, nil
}

// List is part of the objectstore.Bucket interface. It walks the tree in
// the byte order of full names, skipping subtrees outside the prefix or
// before startAfter.
func (b *Bucket) List(ctx context.Context, prefix, startAfter string, limit int) ([]string, string, error) {
	if err := objectstore.ValidatePrefix(prefix); err != nil {
		return nil, "", opError("list", prefix, err)
	}
	if b.closed.Load() {
		return nil, "", opError("list", prefix, objectstore.ErrClosed)
	}
	if limit <= 0 {
		limit = objectstore.DefaultListLimit
	}
	var names []string
	// walk lists the directory rel ("" or "a/b/") and returns true once
	// limit+1 names were found.
	var walk func(rel string) (bool, error)
	walk = func(rel string) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		entries, err := os.ReadDir(filepath.Join(b.root, filepath.FromSlash(rel)))
		if err != nil {
			if isNotExist(err) {
				return false, nil // removed concurrently
			}
			return false, err
		}
		keys := make([]string, 0, len(entries))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), TempPrefix) {
				continue
			}
			k := rel + e.Name()
			if e.IsDir() {
				// NB: a directory sorts as its name plus '/', which is
				// where the names inside it sort among their siblings.
				k += "/"
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if strings.HasSuffix(k, "/") {
				if !strings.HasPrefix(k, prefix) && !strings.HasPrefix(prefix, k) {
					continue
				}
				if startAfter > k && !strings.HasPrefix(startAfter, k) {
					continue // every name below k sorts before startAfter
				}
				done, err := walk(k)
				if done || err != nil {
					return done, err
				}
				continue
			}
			if strings.HasPrefix(k, prefix) && k > startAfter {
				names = append(names, k)
				if len(names) > limit {
					return true, nil
				}
			}
		}
		return false, nil
	}
	if _, err := walk(""); err != nil {
		return nil, "", opError("list", prefix, err)
	}
	if len(names) > limit {
		names = names[:limit]
		return names, names[limit-1], nil
	}
	return names, "", nil
}

// Delete is part of the objectstore.Bucket interface. It also removes the
// directories that the deletion leaves empty.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	path, err := b.path(ctx, "delete", name)
	if err != nil {
		return err
	}
	if fi, err := os.Lstat(path); err == nil && fi.IsDir() {
		return nil // a "directory" of other objects, not an object
	}
	if err := os.Remove(path); err != nil {
		if isNotExist(err) {
			return nil
		}
		return opError("delete", name, err)
	}
	dir := filepath.Dir(path)
	if err := syncDir(dir); err != nil {
		return opError("delete", name, err)
	}
	for dir != b.root && strings.HasPrefix(dir, b.root) {
		if os.Remove(dir) != nil {
			break // not empty, or a concurrent Put is using it
		}
		dir = filepath.Dir(dir)
	}
	return nil
}

// Close is part of the objectstore.Bucket interface. Later calls fail with
// ErrClosed.
func (b *Bucket) Close() error {
	b.closed.Store(true)
	return nil
}
