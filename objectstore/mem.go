package objectstore

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewMemBucket returns an empty in-memory Bucket, for tests. Put copies the
// data in; readers share the stored (never modified) bytes. Close makes
// later calls fail with ErrClosed.
func NewMemBucket() Bucket {
	b := &memBucket{}
	b.mu.objects = map[string]memObject{}
	return b
}

type memObject struct {
	data    []byte // INVARIANT: never modified once stored.
	crc     uint32
	modTime time.Time
}

type memBucket struct {
	mu struct {
		sync.Mutex
		// objects maps names to content; closed is set by Close.
		objects map[string]memObject
		closed  bool
	}
}

var _ Bucket = (*memBucket)(nil)

func (b *memBucket) lookup(ctx context.Context, op, name string) (memObject, error) {
	if err := ValidateName(name); err != nil {
		return memObject{}, opError(op, name, err)
	}
	if err := ctx.Err(); err != nil {
		return memObject{}, opError(op, name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.closed {
		return memObject{}, opError(op, name, ErrClosed)
	}
	o, ok := b.mu.objects[name]
	if !ok {
		return memObject{}, opError(op, name, ErrNotExist)
	}
	return o, nil
}

// Put is part of the objectstore.Bucket interface.
func (b *memBucket) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := ValidateName(name); err != nil {
		return opError("put", name, err)
	}
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(int(min(size, 64<<20))) // size is the caller's word: bound the allocation
	}
	if _, err := buf.ReadFrom(SizedReader(ctxReader{ctx, r}, size)); err != nil {
		return opError("put", name, err)
	}
	if err := ctx.Err(); err != nil {
		return opError("put", name, err)
	}
	data := buf.Bytes()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.closed {
		return opError("put", name, ErrClosed)
	}
	b.mu.objects[name] = memObject{data: data, crc: crc32.Checksum(data, castagnoli), modTime: time.Now()}
	return nil
}

// Get is part of the objectstore.Bucket interface.
func (b *memBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	o, err := b.lookup(ctx, "get", name)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(o.data)), nil
}

// GetRange is part of the objectstore.Bucket interface.
func (b *memBucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	o, err := b.lookup(ctx, "get", name)
	if err != nil {
		return nil, err
	}
	end, err := RangeEnd(int64(len(o.data)), off, length)
	if err != nil {
		return nil, opError("get", name, err)
	}
	return io.NopCloser(bytes.NewReader(o.data[off:end])), nil
}

// RangeEnd checks a GetRange request against an object of the given size
// and returns the end (exclusive) of the bytes to return. It fails with
// ErrInvalidRange if off < 0 or off > size.
func RangeEnd(size, off, length int64) (int64, error) {
	if off < 0 || off > size {
		return 0, fmt.Errorf("%w: offset %d of an object of %d bytes", ErrInvalidRange, off, size)
	}
	if length < 0 || length > size-off {
		return size, nil
	}
	return off + length, nil
}

// Attributes is part of the objectstore.Bucket interface.
func (b *memBucket) Attributes(ctx context.Context, name string) (Attributes, error) {
	o, err := b.lookup(ctx, "attributes", name)
	if err != nil {
		return Attributes{}, err
	}
	return Attributes{
		Size:         int64(len(o.data)),
		LastModified: o.modTime,
		ETag:         fmt.Sprintf("%08x", o.crc),
		CRC32C:       o.crc,
		HasCRC32C:    true,
	}, nil
}

// List is part of the objectstore.Bucket interface.
func (b *memBucket) List(ctx context.Context, prefix, startAfter string, limit int) ([]string, string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, "", opError("list", prefix, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, "", opError("list", prefix, err)
	}
	if limit <= 0 {
		limit = DefaultListLimit
	}
	b.mu.Lock()
	if b.mu.closed {
		b.mu.Unlock()
		return nil, "", opError("list", prefix, ErrClosed)
	}
	var names []string
	for n := range b.mu.objects {
		if strings.HasPrefix(n, prefix) && n > startAfter {
			names = append(names, n)
		}
	}
	b.mu.Unlock()
	sort.Strings(names)
	if len(names) > limit {
		names = names[:limit]
		return names, names[limit-1], nil
	}
	return names, "", nil
}

// Delete is part of the objectstore.Bucket interface.
func (b *memBucket) Delete(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return opError("delete", name, err)
	}
	if err := ctx.Err(); err != nil {
		return opError("delete", name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.closed {
		return opError("delete", name, ErrClosed)
	}
	delete(b.mu.objects, name)
	return nil
}

// Close is part of the objectstore.Bucket interface.
func (b *memBucket) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mu.closed = true
	return nil
}

// ctxReader fails reads once ctx is done, so that a cancelled Put stops
// consuming its input.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ContextReader returns a reader that fails with ctx's error once ctx is
// done. Backends use it so that cancelling a Put stops the upload.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }
