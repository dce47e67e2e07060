// Package fallback is an objectstore.Bucket that reads from a primary
// bucket and, when the primary fails or is slow, from a secondary bucket
// that holds copies of the same objects (in tierkv: the object store, and
// erasure-coded shards of every object on peers).
//
//	b, err := fallback.New(s3Bucket, erasureBucket, fallback.Options{HedgeDelay: 50 * time.Millisecond})
//	rc, err := b.GetRange(ctx, "n1/tables/000042.sst", 4096, 65536)
//	st := b.Stats() // FallbackReads, HedgedReads, FallbackServed, FallbackBytes, ...
//
// Reads (Get, GetRange, Attributes, List) go to the primary. The secondary
// is asked too when:
//
//   - the primary fails with any error except a definitive answer: the
//     caller's own context ending, ErrInvalidName, ErrInvalidRange, and
//     ErrNotExist unless Options.FallbackOnNotExist is set;
//   - Options.HedgeDelay > 0 and the primary has not answered within it
//     (a hedged read): the first success wins and the other call's context
//     is cancelled (a reader it returns anyway is closed).
//
// A reader returned by Get or GetRange comes whole from one store, so the
// contract's "never a mix of versions" holds. Hedging applies to the time
// until the store answers (for Get and GetRange: until it returns the
// reader), not to the streaming that follows; an error while streaming is
// returned by Read, and the caller retries (objects being immutable in
// tierkv, a retry can then be served by the secondary).
//
// Writes (Put, Delete) go to the primary only. Filling the secondary is the
// caller's job: how to copy (synchronously or not, after verifying the
// primary's copy or not) and what a partial failure means are policy, which
// tierkv's tiering decides (it writes the erasure-coded copy after verifying
// the primary's). With FallbackOnNotExist, delete from both stores, or the
// secondary serves deleted objects.
//
// Retries compose: wrap each store in objectstore.WithRetry to retry it
// before falling back (a hedge still starts the secondary while the primary
// backs off), and retry the combined call with objectstore.Retry for errors
// while streaming.
//
// When no store answers, the error names the operation and the object and
// wraps both errors ("objectstore/fallback: get a/b: primary: ...;
// secondary: ..."), with one exception: a secondary's ErrNotExist is not
// wrapped (only quoted) when the primary failed otherwise, so that
// errors.Is(err, objectstore.ErrNotExist) holds only when the primary said
// so, and a transient primary failure stays transient (retryable).
package fallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/tierkv/tierkv/objectstore"
)

// Options configures New.
type Options struct {
	// HedgeDelay, if positive, sends a read to the secondary too when the
	// primary has not answered within it; the first success wins. 0
	// disables hedging: the secondary is asked only after the primary
	// failed.
	HedgeDelay time.Duration
	// FallbackOnNotExist asks the secondary when the primary answers
	// ErrNotExist (a primary that lost or has not yet received an object).
	// By default the primary's ErrNotExist is the answer.
	FallbackOnNotExist bool
}

// Stats are the counters of a Bucket, for metrics. All count calls since
// New.
type Stats struct {
	// Reads counts read calls: Get, GetRange, Attributes and List.
	Reads uint64
	// FallbackReads counts reads sent to the secondary, after a primary
	// failure or because of the hedge delay; HedgedReads those sent
	// because of the hedge delay.
	FallbackReads, HedgedReads uint64
	// FallbackServed counts reads the secondary answered (it won the
	// race, or the primary had failed); FallbackBytes the bytes read from
	// readers the secondary returned.
	FallbackServed, FallbackBytes uint64
	// Failed counts reads that neither store served.
	Failed uint64
}

// Bucket reads from a primary bucket with a secondary as fallback. Create
// it with New. It is safe for concurrent use.
type Bucket struct {
	primary, secondary objectstore.Bucket
	opts               Options

	reads, fallbackReads, hedgedReads, fallbackServed, fallbackBytes, failed atomic.Uint64
}

var _ objectstore.Bucket = (*Bucket)(nil)

// New returns a Bucket reading from primary, falling back to (or hedging
// with) secondary. Close closes both.
func New(primary, secondary objectstore.Bucket, opts Options) (*Bucket, error) {
	switch {
	case primary == nil || secondary == nil:
		return nil, errors.New("objectstore/fallback: primary and secondary buckets are required")
	case opts.HedgeDelay < 0:
		return nil, fmt.Errorf("objectstore/fallback: negative HedgeDelay %v", opts.HedgeDelay)
	}
	return &Bucket{primary: primary, secondary: secondary, opts: opts}, nil
}

// Stats returns the counters.
func (b *Bucket) Stats() Stats {
	return Stats{
		Reads:          b.reads.Load(),
		FallbackReads:  b.fallbackReads.Load(),
		HedgedReads:    b.hedgedReads.Load(),
		FallbackServed: b.fallbackServed.Load(),
		FallbackBytes:  b.fallbackBytes.Load(),
		Failed:         b.failed.Load(),
	}
}

// BothFailedError is returned when neither store served a read.
type BothFailedError struct {
	Op, Name string
	// Primary is the primary's error; Secondary the secondary's, or nil
	// if it was not asked.
	Primary, Secondary error
}

func (e *BothFailedError) Error() string {
	if e.Secondary == nil {
		return fmt.Sprintf("objectstore/fallback: %s %s: primary: %v", e.Op, e.Name, e.Primary)
	}
	return fmt.Sprintf("objectstore/fallback: %s %s: primary: %v; secondary: %v", e.Op, e.Name, e.Primary, e.Secondary)
}

// Unwrap returns the errors errors.Is and errors.As see: the primary's, and
// the secondary's unless it is an ErrNotExist while the primary failed
// otherwise (see the package documentation).
func (e *BothFailedError) Unwrap() []error {
	errs := []error{e.Primary}
	if e.Secondary != nil && (!errors.Is(e.Secondary, objectstore.ErrNotExist) || errors.Is(e.Primary, objectstore.ErrNotExist)) {
		errs = append(errs, e.Secondary)
	}
	return errs
}

// definitive reports whether the primary's err is the answer, without
// asking the secondary.
func (b *Bucket) definitive(ctx context.Context, err error) bool {
	switch {
	case ctx.Err() != nil:
		return true // the caller gave up
	case errors.Is(err, objectstore.ErrInvalidName), errors.Is(err, objectstore.ErrInvalidRange):
		return true // the secondary would say the same
	case errors.Is(err, objectstore.ErrNotExist):
		return !b.opts.FallbackOnNotExist
	}
	return false
}

// outcome is one store's answer.
type outcome[T any] struct {
	v   T
	err error
	// who is 0 for the primary, 1 for the secondary.
	who int
}

// race runs call on the primary and, by the rules of the package
// documentation, on the secondary. It returns the first success, whether
// the secondary gave it, and the cancel func of the context the winning
// call ran under, which the caller calls once done with the value (a
// reader may depend on its context). release disposes of a value that
// arrives after the race was decided.
func race[T any](ctx context.Context, b *Bucket, op, name string,
	call func(ctx context.Context, bk objectstore.Bucket) (T, error), release func(T),
) (v T, fromSecondary bool, done context.CancelFunc, err error) {
	b.reads.Add(1)
	if err := ctx.Err(); err != nil {
		return v, false, nil, fmt.Errorf("objectstore/fallback: %s %s: %w", op, name, err)
	}
	results := make(chan outcome[T], 2)
	var cancels [2]context.CancelFunc
	pending := 0
	start := func(who int) {
		bk := b.primary
		if who == 1 {
			bk = b.secondary
		}
		cctx, cancel := context.WithCancel(ctx)
		cancels[who] = cancel
		pending++
		go func() {
			v, err := call(cctx, bk)
			results <- outcome[T]{v: v, err: err, who: who}
		}()
	}
	startSecondary := func(hedged bool) {
		b.fallbackReads.Add(1)
		if hedged {
			b.hedgedReads.Add(1)
		}
		start(1)
	}
	// abandon cancels every call but the winner's (keep; -1 for none) and
	// disposes of what the calls still running return, in the background:
	// the caller does not wait for a loser.
	abandon := func(keep int) {
		for who, c := range cancels {
			if c != nil && who != keep {
				c()
			}
		}
		if pending > 0 {
			go func(n int) {
				for range n {
					if r := <-results; r.err == nil && release != nil {
						release(r.v)
					}
				}
			}(pending)
		}
	}
	start(0)
	var hedge <-chan time.Time
	if b.opts.HedgeDelay > 0 {
		t := time.NewTimer(b.opts.HedgeDelay)
		defer t.Stop()
		hedge = t.C
	}
	var errs [2]error
	for pending > 0 {
		select {
		case <-hedge:
			hedge = nil
			if cancels[1] == nil {
				startSecondary(true)
			}
		case <-ctx.Done():
			abandon(-1)
			return v, false, nil, fmt.Errorf("objectstore/fallback: %s %s: %w", op, name, ctx.Err())
		case r := <-results:
			pending--
			if r.err == nil {
				abandon(r.who)
				if r.who == 1 {
					b.fallbackServed.Add(1)
				}
				return r.v, r.who == 1, cancels[r.who], nil
			}
			cancels[r.who]()
			errs[r.who] = r.err
			if r.who == 1 {
				continue // the primary, still running, may answer
			}
			if b.definitive(ctx, r.err) {
				abandon(-1)
				if err := ctx.Err(); err != nil {
					return v, false, nil, fmt.Errorf("objectstore/fallback: %s %s: %w", op, name, r.err)
				}
				// Not a failure: the primary answered.
				return v, false, nil, r.err
			}
			if cancels[1] == nil {
				startSecondary(false)
			}
		}
	}
	b.failed.Add(1)
	return v, false, nil, &BothFailedError{Op: op, Name: name, Primary: errs[0], Secondary: errs[1]}
}

// reader is a reader a store returned: Close also ends the context its
// call ran under; reads of a secondary's reader are counted.
type reader struct {
	rc     io.ReadCloser
	done   context.CancelFunc
	count  *atomic.Uint64 // nil for the primary's readers
	closed atomic.Bool
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if r.count != nil && n > 0 {
		r.count.Add(uint64(n))
	}
	return n, err
}

// WriteTo lets io.Copy use the store's reader's WriteTo when it has one.
func (r *reader) WriteTo(w io.Writer) (int64, error) {
	var n int64
	var err error
	if wt, ok := r.rc.(io.WriterTo); ok {
		n, err = wt.WriteTo(w)
	} else {
		n, err = io.Copy(w, struct{ io.Reader }{r.rc})
	}
	if r.count != nil && n > 0 {
		r.count.Add(uint64(n))
	}
	return n, err
}

func (r *reader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	err := r.rc.Close()
	r.done()
	return err
}

func closeReader(rc io.ReadCloser) { _ = rc.Close() }

func (b *Bucket) readCall(ctx context.Context, op, name string, open func(ctx context.Context, bk objectstore.Bucket) (io.ReadCloser, error)) (io.ReadCloser, error) {
	rc, secondary, done, err := race(ctx, b, op, name, open, closeReader)
	if err != nil {
		return nil, err
	}
	r := &reader{rc: rc, done: done}
	if secondary {
		r.count = &b.fallbackBytes
	}
	return r, nil
}

// Get is part of the objectstore.Bucket interface.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return b.readCall(ctx, "get", name, func(ctx context.Context, bk objectstore.Bucket) (io.ReadCloser, error) {
		return bk.Get(ctx, name)
	})
}

// GetRange is part of the objectstore.Bucket interface.
func (b *Bucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	return b.readCall(ctx, "get", name, func(ctx context.Context, bk objectstore.Bucket) (io.ReadCloser, error) {
		return bk.GetRange(ctx, name, off, length)
	})
}

// Attributes is part of the objectstore.Bucket interface. The secondary's
// attributes describe its copy (its ETag and LastModified may differ from
// the primary's; size and CRC32C are the object's).
func (b *Bucket) Attributes(ctx context.Context, name string) (objectstore.Attributes, error) {
	a, _, done, err := race(ctx, b, "attributes", name, func(ctx context.Context, bk objectstore.Bucket) (objectstore.Attributes, error) {
		return bk.Attributes(ctx, name)
	}, nil)
	if done != nil {
		done()
	}
	return a, err
}

type page struct {
	names []string
	next  string
}

// List is part of the objectstore.Bucket interface. A page comes whole
// from one store; a listing may mix pages of both (the secondary holds the
// same names, and pages continue by name).
func (b *Bucket) List(ctx context.Context, prefix, startAfter string, limit int) ([]string, string, error) {
	p, _, done, err := race(ctx, b, "list", prefix, func(ctx context.Context, bk objectstore.Bucket) (page, error) {
		names, next, err := bk.List(ctx, prefix, startAfter, limit)
		return page{names, next}, err
	}, nil)
	if done != nil {
		done()
	}
	return p.names, p.next, err
}

// Put is part of the objectstore.Bucket interface: it writes to the
// primary only.
func (b *Bucket) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	return b.primary.Put(ctx, name, r, size)
}

// Delete is part of the objectstore.Bucket interface: it deletes from the
// primary only.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	return b.primary.Delete(ctx, name)
}

// Close is part of the objectstore.Bucket interface: it closes both
// buckets.
func (b *Bucket) Close() error {
	return errors.Join(b.primary.Close(), b.secondary.Close())
}
