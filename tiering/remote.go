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
	"github.com/tierkv/tierkv/tiering/internal/catalog"
)

// fetcher reads byte ranges of objects from the primary bucket, falling
// back to (or hedging with) the fallback bucket.
type fetcher struct {
	primary, fallback objectstore.Bucket
	hedge             time.Duration
	retry             objectstore.RetryOptions
	m                 *counters
}

// readRange reads exactly n bytes at off of name from b.
func readRange(ctx context.Context, b objectstore.Bucket, name string, off, n int64, retry objectstore.RetryOptions) ([]byte, error) {
	p := make([]byte, n)
	err := objectstore.Retry(ctx, retry, func(ctx context.Context) error {
		rc, err := b.GetRange(ctx, name, off, n)
		if err != nil {
			return err
		}
		defer rc.Close()
		if _, err := io.ReadFull(rc, p); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		return nil
	})
	return p, err
}

// fetch reads [off, off+n) of object name (what names it for errors).
func (f *fetcher) fetch(ctx context.Context, what, name string, off, n int64) ([]byte, error) {
	f.m.getOps.Add(1)
	if f.fallback == nil {
		p, err := readRange(ctx, f.primary, name, off, n, f.retry)
		if err != nil {
			return nil, fmt.Errorf("tiering: read %s [%d, %d): %w", what, off, off+n, err)
		}
		f.m.bytesDown.Add(uint64(n))
		return p, nil
	}
	type result struct {
		p        []byte
		err      error
		fallback bool
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, 2)
	go func() {
		p, err := readRange(ctx, f.primary, name, off, n, f.retry)
		results <- result{p, err, false}
	}()
	var hedge <-chan time.Time
	if f.hedge > 0 {
		t := time.NewTimer(f.hedge)
		defer t.Stop()
		hedge = t.C
	}
	startFallback := func() {
		f.m.fallbackReads.Add(1)
		go func() {
			p, err := readRange(ctx, f.fallback, name, off, n, f.retry)
			results <- result{p, err, true}
		}()
	}
	pending, started := 1, false
	var errs []error
	for pending > 0 {
		select {
		case <-hedge:
			hedge = nil
			if !started {
				started = true
				pending++
				f.m.hedgedReads.Add(1)
				startFallback()
			}
		case r := <-results:
			pending--
			if r.err == nil {
				f.m.bytesDown.Add(uint64(n))
				if r.fallback {
					f.m.fallbackBytes.Add(uint64(n))
				}
				return r.p, nil
			}
			src := "primary"
			if r.fallback {
				src = "fallback"
			}
			errs = append(errs, fmt.Errorf("%s: %w", src, r.err))
			if !started && ctx.Err() == nil {
				started = true
				pending++
				startFallback()
			}
		}
	}
	return nil, fmt.Errorf("tiering: read %s [%d, %d): %w", what, off, off+n, errors.Join(errs...))
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
		end = from
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
		data, err := r.m.fetch.fetch(ctx, r.what, r.name, lo, hi-lo)
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
