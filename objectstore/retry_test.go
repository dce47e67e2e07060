package objectstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierkv/tierkv/objectstore"
)

// fakeSleep records the backoffs instead of sleeping.
type fakeSleep struct {
	delays []time.Duration
	// onSleep, if set, runs at each sleep (e.g. to cancel the context).
	onSleep func()
}

func (f *fakeSleep) sleep(ctx context.Context, d time.Duration) error {
	f.delays = append(f.delays, d)
	if f.onSleep != nil {
		f.onSleep()
	}
	return ctx.Err()
}

func TestRetryTransientThenSuccess(t *testing.T) {
	var fs fakeSleep
	calls := 0
	err := objectstore.Retry(context.Background(), objectstore.RetryOptions{Sleep: fs.sleep, Jitter: func() float64 { return 0.5 }, BaseDelay: 10 * time.Millisecond, MaxDelay: 30 * time.Millisecond, MaxAttempts: 10},
		func(context.Context) error {
			calls++
			if calls < 5 {
				return objectstore.MarkTransient(errors.New("503 slow down"))
			}
			return nil
		})
	if err != nil || calls != 5 {
		t.Fatalf("Retry = %v after %d calls, want nil after 5", err, calls)
	}
	// Full jitter of an exponential backoff capped at MaxDelay.
	want := []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 15 * time.Millisecond, 15 * time.Millisecond}
	if fmt.Sprint(fs.delays) != fmt.Sprint(want) {
		t.Fatalf("backoffs = %v, want %v", fs.delays, want)
	}
}

func TestRetryPermanentNotRetried(t *testing.T) {
	for _, perm := range []error{
		errors.New("403 access denied"),
		fmt.Errorf("get x: %w", objectstore.ErrNotExist),
		objectstore.ErrInvalidName,
		context.Canceled,
	} {
		var fs fakeSleep
		calls := 0
		err := objectstore.Retry(context.Background(), objectstore.RetryOptions{Sleep: fs.sleep}, func(context.Context) error {
			calls++
			return perm
		})
		if !errors.Is(err, perm) || calls != 1 || len(fs.delays) != 0 {
			t.Fatalf("permanent %v: Retry = %v after %d calls, %d sleeps; want 1 call", perm, err, calls, len(fs.delays))
		}
	}
}

func TestRetryBounded(t *testing.T) {
	var fs fakeSleep
	calls := 0
	transient := objectstore.MarkTransient(errors.New("connection reset"))
	err := objectstore.Retry(context.Background(), objectstore.RetryOptions{Sleep: fs.sleep, MaxAttempts: 4}, func(context.Context) error {
		calls++
		return transient
	})
	if calls != 4 || len(fs.delays) != 3 {
		t.Fatalf("%d calls and %d sleeps, want 4 and 3", calls, len(fs.delays))
	}
	if !errors.Is(err, transient) || !strings.Contains(err.Error(), "4 attempts") {
		t.Fatalf("Retry = %v, want the last error and the attempt count", err)
	}
	for _, d := range fs.delays {
		if d < 0 || d > 2*time.Second {
			t.Fatalf("backoff %v out of bounds", d)
		}
	}
}

func TestRetryStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fs := fakeSleep{onSleep: cancel}
	calls := 0
	err := objectstore.Retry(ctx, objectstore.RetryOptions{Sleep: fs.sleep, MaxAttempts: 100}, func(context.Context) error {
		calls++
		return objectstore.MarkTransient(errors.New("timeout"))
	})
	if calls != 1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Retry = %v after %d calls, want context.Canceled after 1", err, calls)
	}
	// The default sleeper returns as soon as the context is done.
	start := time.Now()
	err = objectstore.Retry(ctx, objectstore.RetryOptions{BaseDelay: time.Hour, MaxDelay: time.Hour}, func(context.Context) error {
		return objectstore.MarkTransient(errors.New("timeout"))
	})
	if !errors.Is(err, context.Canceled) || time.Since(start) > time.Minute {
		t.Fatalf("Retry with a cancelled context = %v after %v", err, time.Since(start))
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestIsTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("boom"), false},
		{objectstore.MarkTransient(errors.New("500")), true},
		{fmt.Errorf("put x: %w", objectstore.MarkTransient(errors.New("500"))), true},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{timeoutErr{}, true},
		{io.ErrUnexpectedEOF, true},
		{objectstore.MarkTransient(context.Canceled), false},
		{context.DeadlineExceeded, false},
		{fmt.Errorf("x: %w", objectstore.ErrNotExist), false},
		{objectstore.ErrSizeMismatch, false},
	} {
		if got := objectstore.IsTransient(tc.err); got != tc.want {
			t.Errorf("IsTransient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// flakyBucket fails the first n calls of every method with a transient error.
type flakyBucket struct {
	objectstore.Bucket
	n     int
	calls int
}

func (f *flakyBucket) fail() error {
	f.calls++
	if f.calls <= f.n {
		return objectstore.MarkTransient(errors.New("injected 503"))
	}
	return nil
}

func (f *flakyBucket) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	// Consume part of the input before failing, as a real upload would.
	if f.calls < f.n {
		io.CopyN(io.Discard, r, 3)
	}
	if err := f.fail(); err != nil {
		return err
	}
	return f.Bucket.Put(ctx, name, r, size)
}

func (f *flakyBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.Bucket.Get(ctx, name)
}

func TestWithRetry(t *testing.T) {
	ctx := context.Background()
	var fs fakeSleep
	fb := &flakyBucket{Bucket: objectstore.NewMemBucket(), n: 2}
	b := objectstore.WithRetry(fb, objectstore.RetryOptions{Sleep: fs.sleep})
	defer b.Close()
	// A seekable reader is rewound for every attempt.
	if err := b.Put(ctx, "x", bytes.NewReader([]byte("hello world")), 11); err != nil {
		t.Fatal(err)
	}
	if fb.calls != 3 {
		t.Fatalf("Put made %d attempts, want 3", fb.calls)
	}
	fb.calls = 0
	got, err := objectstore.ReadAll(ctx, b, "x")
	if err != nil || string(got) != "hello world" || fb.calls != 3 {
		t.Fatalf("Get = %q, %v after %d attempts", got, err, fb.calls)
	}
	// A reader that cannot be rewound is attempted once.
	fb.calls = 0
	err = b.Put(ctx, "y", io.MultiReader(strings.NewReader("hello")), 5)
	if !objectstore.IsTransient(err) || fb.calls != 1 {
		t.Fatalf("Put of a non-seekable reader = %v after %d attempts, want the transient error after 1", err, fb.calls)
	}
}
