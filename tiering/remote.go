package tiering

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/fallback"
	"github.com/tierkv/tierkv/tiering/internal/catalog"
)

// reads is how tiering reads objects: from the primary bucket, each call
// retried, falling back to (or hedged with) the fallback bucket through
// objectstore/fallback when there is one.
type reads struct {
	// b serves the reads: the primary wrapped in objectstore.WithRetry, or
	// fb.
	b objectstore.Bucket
	// fb is the fallback combinator (primary and fallback, each retried),
	// nil without a fallback bucket.
	fb    *fallback.Bucket
	retry objectstore.RetryOptions
	m     *counters
}

// newReads returns the reads of primary with the optional secondary: a
// read the primary fails (after its retries), answers ErrNotExist to, or
// has not answered within hedge (if positive), goes to the secondary.
func newReads(primary, secondary objectstore.Bucket, hedge time.Duration, retry objectstore.RetryOptions, m *counters) (*reads, error) {
	retry = retry.EnsureDefaults()
	r := &reads{b: objectstore.WithRetry(primary, retry), retry: retry, m: m}
	if secondary != nil {
		// NB: FallbackOnNotExist: every object tiering reads is in the
		// catalog or a backup, so it was written to both buckets; a
		// primary that says otherwise lost it.
		fb, err := fallback.New(r.b, objectstore.WithRetry(secondary, retry), fallback.Options{HedgeDelay: hedge, FallbackOnNotExist: true})
		if err != nil {
			return nil, fmt.Errorf("tiering: %w", err)
		}
		r.b, r.fb = fb, fb
	}
	return r, nil
}

// stats returns the fallback combinator's counters (zero without one).
func (r *reads) stats() fallback.Stats {
	if r.fb == nil {
		return fallback.Stats{}
	}
	return r.fb.Stats()
}

// stream opens a reader and consumes it. Opening is retried inside r.b
// (each bucket by r.retry, then the fallback); a transient error while
// consuming opens the object again (the fallback serves if the primary
// failed meanwhile), at most r.retry.MaxAttempts times in all.
func (r *reads) stream(ctx context.Context, open func(ctx context.Context) (io.ReadCloser, error), consume func(io.Reader) error) error {
	for attempt := 1; ; attempt++ {
		rc, err := open(ctx)
		if err != nil {
			return err
		}
		err = consume(rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err == nil || ctx.Err() != nil || !r.retry.IsTransient(err) {
			return err
		}
		if attempt >= r.retry.MaxAttempts {
			return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
	}
}

// readRange reads exactly n bytes at off of object name (what names it
// for errors).
func (r *reads) readRange(ctx context.Context, what, name string, off, n int64) ([]byte, error) {
	r.m.getOps.Add(1)
	p := make([]byte, n)
	err := r.stream(ctx, func(ctx context.Context) (io.ReadCloser, error) {
		return r.b.GetRange(ctx, name, off, n)
	}, func(rd io.Reader) error {
		_, err := io.ReadFull(rd, p)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tiering: read %s [%d, %d): %w", what, off, off+n, err)
	}
	r.m.bytesDown.Add(uint64(n))
	return p, nil
}

// remoteReadable serves an object that lives only in the object store: the
// metadata range [MetaOff, Size) from a local file kept at upload (or
// restore) time, everything before it by ranged GETs of aligned chunks
// through the disk cache. Once hydration puts a local copy in place, reads
// switch to it.
type remoteReadable struct {
	m     *Manager
	e     catalog.Entry
	what  string // "000042.sst", for errors
	name  string // the bucket object name
	meta  vfs.File
	local atomic.Pointer[objstorage.Readable]
	// mu serializes switching to local with Close.
	mu     sync.Mutex
	closed bool
}

var _ objstorage.Readable = (*remoteReadable)(nil)

// ReadAt is part of the objstorage.Readable interface.
func (r *remoteReadable) ReadAt(ctx context.Context, p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > r.e.Size {
		return fmt.Errorf("tiering: read %s [%d, %d): beyond size %d", r.what, off, off+int64(len(p)), r.e.Size)
	}
	if l := r.local.Load(); l != nil {
		return (*l).ReadAt(ctx, p, off)
	}
	end := off + int64(len(p))
	if end > r.e.MetaOff {
		from := max(off, r.e.MetaOff)
		q := p[from-off:]
		n, err := r.meta.ReadAt(q, from-r.e.MetaOff)
		if n != len(q) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("tiering: read kept metadata of %s at %d: %w", r.what, from, err)
		}
		p = p[:from-off]
	}
	if len(p) == 0 {
		return nil
	}
	r.m.m.remoteReads.Add(1)
	return r.readChunks(ctx, p, off)
}

// readChunks reads [off, off+len(p)) (all before MetaOff) through the
// cache: cached chunks from disk, each run of missing chunks with one GET.
func (r *remoteReadable) readChunks(ctx context.Context, p []byte, off int64) error {
	cs := r.m.opts.ChunkSize
	end := off + int64(len(p))
	first, last := off/cs, (end-1)/cs
	chunkRange := func(c int64) (int64, int64) { return c * cs, min((c+1)*cs, r.e.MetaOff) }
	bufs := make([][]byte, last-first+1)
	var missing []int64
	for c := first; c <= last; c++ {
		lo, hi := chunkRange(c)
		b := make([]byte, hi-lo)
		if r.m.cache.get(chunkKey{r.e.Type, r.e.Num, c}, b) {
			r.m.m.cacheHits.Add(1)
			bufs[c-first] = b
		} else {
			r.m.m.cacheMisses.Add(1)
			missing = append(missing, c)
		}
	}
	for i := 0; i < len(missing); {
		j := i
		for j+1 < len(missing) && missing[j+1] == missing[j]+1 {
			j++
		}
		lo, _ := chunkRange(missing[i])
		_, hi := chunkRange(missing[j])
		data, err := r.m.reads.readRange(ctx, r.what, r.name, lo, hi-lo)
		if err != nil {
			return err
		}
		for c := missing[i]; c <= missing[j]; c++ {
			clo, chi := chunkRange(c)
			b := data[clo-lo : chi-lo]
			r.m.cache.put(chunkKey{r.e.Type, r.e.Num, c}, b)
			bufs[c-first] = b
		}
		i = j + 1
	}
	for c := first; c <= last; c++ {
		lo, hi := chunkRange(c)
		b := bufs[c-first]
		s, e := max(lo, off), min(hi, end)
		copy(p[s-off:e-off], b[s-lo:e-lo])
	}
	return nil
}

// Size is part of the objstorage.Readable interface.
func (r *remoteReadable) Size() int64 { return r.e.Size }

// Close is part of the objstorage.Readable interface.
func (r *remoteReadable) Close() error {
	r.m.unregister(r)
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	var errs []error
	if l := r.local.Load(); l != nil {
		errs = append(errs, (*l).Close())
	}
	errs = append(errs, r.meta.Close())
	return errors.Join(errs...)
}

// switchToLocal makes reads use the local copy now in place.
func (r *remoteReadable) switchToLocal(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.local.Load() != nil {
		return
	}
	l, err := r.m.local.Open(ctx, r.e.Type, r.e.Num)
	if err != nil {
		return
	}
	r.local.Store(&l)
}
