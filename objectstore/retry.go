package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"time"
)

// MarkTransient returns err marked as transient: errors.Is(result,
// ErrTransient) is true and errors.Is/As still see err. nil stays nil.
func MarkTransient(err error) error {
	if err == nil {
		return nil
	}
	return transientError{err}
}

type transientError struct{ err error }

func (e transientError) Error() string        { return e.err.Error() }
func (e transientError) Unwrap() error        { return e.err }
func (e transientError) Is(target error) bool { return target == ErrTransient }

// IsTransient reports whether retrying the call that returned err may
// succeed. Context errors, ErrNotExist, ErrInvalidName, ErrInvalidRange and
// ErrSizeMismatch are permanent. Errors marked with MarkTransient, network
// timeouts, connection resets and refusals, broken pipes and unexpected EOFs
// are transient. Everything else is permanent.
func IsTransient(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrNotExist), errors.Is(err, ErrInvalidName),
		errors.Is(err, ErrInvalidRange), errors.Is(err, ErrSizeMismatch), errors.Is(err, ErrClosed):
		return false
	case errors.Is(err, ErrTransient):
		return true
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// RetryOptions configures Retry and WithRetry. The zero value is usable:
// EnsureDefaults fills in the defaults.
type RetryOptions struct {
	// MaxAttempts bounds the number of attempts, the first included.
	// Default 5 (with the default delays, at most ~1.5 s of backoff).
	MaxAttempts int
	// BaseDelay is the backoff before the second attempt; it doubles for
	// every further attempt. Default 50ms.
	BaseDelay time.Duration
	// MaxDelay caps the backoff. Default 2s.
	MaxDelay time.Duration
	// IsTransient classifies errors; only transient ones are retried.
	// Default IsTransient.
	IsTransient func(error) bool
	// Sleep waits d or until ctx is done, returning ctx's error then.
	// Default: a timer. Tests inject a fake that does not sleep.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a uniformly distributed float64 in [0, 1); the backoff
	// is Jitter() * min(MaxDelay, BaseDelay * 2^(attempt-1)) ("full
	// jitter"). Default math/rand/v2.Float64.
	Jitter func() float64
	// OnRetry, if set, is called before each backoff with the attempt that
	// failed (1-based) and its error.
	OnRetry func(attempt int, err error)
}

// EnsureDefaults fills in zero fields with their defaults and returns o.
func (o RetryOptions) EnsureDefaults() RetryOptions {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = 50 * time.Millisecond
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 2 * time.Second
	}
	if o.IsTransient == nil {
		o.IsTransient = IsTransient
	}
	if o.Sleep == nil {
		o.Sleep = sleepCtx
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	return o
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Retry calls op until it succeeds, fails with an error that is not
// transient, MaxAttempts attempts were made, or ctx is done. It returns op's
// last error; when it gave up after MaxAttempts transient failures, the error
// says so and still wraps the last one (and ErrTransient). When ctx ends during
// a backoff, the returned error wraps both op's last error and ctx's error.
func Retry(ctx context.Context, opts RetryOptions, op func(ctx context.Context) error) error {
	o := opts.EnsureDefaults()
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := op(ctx)
		if err == nil || !o.IsTransient(err) {
			return err
		}
		if attempt >= o.MaxAttempts {
			return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		if o.OnRetry != nil {
			o.OnRetry(attempt, err)
		}
		backoff := o.BaseDelay << min(attempt-1, 30)
		if backoff > o.MaxDelay || backoff <= 0 {
			backoff = o.MaxDelay
		}
		if serr := o.Sleep(ctx, time.Duration(o.Jitter()*float64(backoff))); serr != nil {
			return fmt.Errorf("%w (retry stopped: %w)", err, serr)
		}
	}
}

// WithRetry returns a Bucket that retries b's transient failures with
// Retry. What is retried:
//   - Get, GetRange, Attributes, List and Delete: the whole call. Errors while
//     reading a returned stream are not retried.
//   - Put: only when r implements io.Seeker (os.File, bytes.Reader, ...); it
//     is rewound to where it was before each new attempt. Otherwise Put is
//     attempted once, since the bytes already consumed cannot be replayed.
func WithRetry(b Bucket, opts RetryOptions) Bucket {
	return &retryBucket{b: b, opts: opts.EnsureDefaults()}
}

type retryBucket struct {
	b    Bucket
	opts RetryOptions
}

var _ Bucket = (*retryBucket)(nil)

// Put is part of the objectstore.Bucket interface.
func (rb *retryBucket) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	s, ok := r.(io.Seeker)
	if !ok {
		return rb.b.Put(ctx, name, r, size)
	}
	start, err := s.Seek(0, io.SeekCurrent)
	if err != nil {
		return rb.b.Put(ctx, name, r, size)
	}
	first := true
	return Retry(ctx, rb.opts, func(ctx context.Context) error {
		if !first {
			if _, err := s.Seek(start, io.SeekStart); err != nil {
				return opError("put", name, fmt.Errorf("rewind for retry: %w", err))
			}
		}
		first = false
		return rb.b.Put(ctx, name, r, size)
	})
}

// Get is part of the objectstore.Bucket interface.
func (rb *retryBucket) Get(ctx context.Context, name string) (rc io.ReadCloser, err error) {
	err = Retry(ctx, rb.opts, func(ctx context.Context) error {
		rc, err = rb.b.Get(ctx, name)
		return err
	})
	return rc, err
}

// GetRange is part of the objectstore.Bucket interface.
func (rb *retryBucket) GetRange(ctx context.Context, name string, off, length int64) (rc io.ReadCloser, err error) {
	err = Retry(ctx, rb.opts, func(ctx context.Context) error {
		rc, err = rb.b.GetRange(ctx, name, off, length)
		return err
	})
	return rc, err
}

// Attributes is part of the objectstore.Bucket interface.
func (rb *retryBucket) Attributes(ctx context.Context, name string) (a Attributes, err error) {
	err = Retry(ctx, rb.opts, func(ctx context.Context) error {
		a, err = rb.b.Attributes(ctx, name)
		return err
	})
	return a, err
}

// List is part of the objectstore.Bucket interface.
func (rb *retryBucket) List(ctx context.Context, prefix, startAfter string, limit int) (names []string, next string, err error) {
	err = Retry(ctx, rb.opts, func(ctx context.Context) error {
		names, next, err = rb.b.List(ctx, prefix, startAfter, limit)
		return err
	})
	return names, next, err
}

// Delete is part of the objectstore.Bucket interface.
func (rb *retryBucket) Delete(ctx context.Context, name string) error {
	return Retry(ctx, rb.opts, func(ctx context.Context) error {
		return rb.b.Delete(ctx, name)
	})
}

// Close is part of the objectstore.Bucket interface.
func (rb *retryBucket) Close() error { return rb.b.Close() }
