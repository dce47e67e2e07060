package fallback_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/fallback"
	"github.com/tierkv/tierkv/objectstore/faulty"
	"github.com/tierkv/tierkv/objectstore/objectstoretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var readOps = []faulty.Op{faulty.OpGet, faulty.OpGetRange, faulty.OpAttributes, faulty.OpList}

func newBucket(t *testing.T, primary, secondary objectstore.Bucket, opts fallback.Options) *fallback.Bucket {
	t.Helper()
	b, err := fallback.New(primary, secondary, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAcceptance runs the suite on a healthy primary with an empty
// secondary; on a primary whose reads of every existing object (and every
// listing) fail, so that the secondary, a second view of the same store,
// serves them all; and with hedging after a nanosecond, so that most reads
// race both stores and the loser is cancelled.
func TestAcceptance(t *testing.T) {
	t.Run("Healthy", func(t *testing.T) {
		objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket {
			return newBucket(t, objectstore.NewMemBucket(), objectstore.NewMemBucket(), fallback.Options{})
		})
	})
	t.Run("PrimaryFailing", func(t *testing.T) {
		objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket {
			store := objectstore.NewMemBucket()
			primary := faulty.New(store, faulty.Options{})
			exists := func(name string) bool {
				_, err := store.Attributes(context.Background(), name)
				return err == nil
			}
			primary.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpGet, faulty.OpGetRange, faulty.OpAttributes}, Match: exists, Err: faulty.ErrInjected})
			primary.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpList}, Err: faulty.ErrTransient})
			secondary := faulty.New(store, faulty.Options{})
			b := newBucket(t, primary, secondary, fallback.Options{})
			t.Cleanup(func() {
				if st := b.Stats(); st.Reads > 0 && st.FallbackServed == 0 {
					t.Errorf("the secondary served no read: %+v", st)
				}
			})
			return b
		})
	})
	t.Run("Hedged", func(t *testing.T) {
		objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket {
			store := objectstore.NewMemBucket()
			return newBucket(t, faulty.New(store, faulty.Options{}), faulty.New(store, faulty.Options{}), fallback.Options{HedgeDelay: time.Nanosecond})
		})
	})
}

func put(t *testing.T, b objectstore.Bucket, name, data string) {
	t.Helper()
	objectstoretest.Put(t, b, name, []byte(data))
}

// readAll returns a func reading all of what a Get or GetRange returned:
// readAll(t)(b.Get(ctx, name)).
func readAll(t *testing.T) func(io.ReadCloser, error) string {
	t.Helper()
	return func(rc io.ReadCloser, err error) string {
		t.Helper()
		return readWhole(t, rc, err)
	}
}

func readWhole(t *testing.T, rc io.ReadCloser, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	p, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(p)
}

// pair returns a fallback bucket over two faulty mem buckets holding the
// same objects a (10 bytes) and dir/b.
func pair(t *testing.T, opts fallback.Options, fopts faulty.Options) (*fallback.Bucket, *faulty.Bucket, *faulty.Bucket) {
	t.Helper()
	p := faulty.New(objectstore.NewMemBucket(), fopts)
	s := faulty.New(objectstore.NewMemBucket(), fopts)
	for _, bk := range []objectstore.Bucket{p, s} {
		put(t, bk, "a", "0123456789")
		put(t, bk, "dir/b", "bee")
	}
	p.ResetCalls()
	s.ResetCalls()
	b := newBucket(t, p, s, opts)
	t.Cleanup(func() { b.Close() })
	return b, p, s
}

func secondaryCalls(s *faulty.Bucket) int64 {
	var n int64
	for _, op := range readOps {
		n += s.Calls(op)
	}
	return n
}

// TestPrimaryDown: every read fails on the primary and is served from the
// secondary; the counters say so. A healthy primary serves everything.
func TestPrimaryDown(t *testing.T) {
	ctx := context.Background()
	b, p, s := pair(t, fallback.Options{}, faulty.Options{})
	if got := readAll(t)(b.Get(ctx, "a")); got != "0123456789" {
		t.Fatalf("Get = %q", got)
	}
	if n := secondaryCalls(s); n != 0 || b.Stats().FallbackReads != 0 {
		t.Fatalf("healthy primary: %d secondary calls, stats %+v", n, b.Stats())
	}

	p.Inject(faulty.Fault{Ops: readOps, Err: faulty.ErrInjected})
	if got := readAll(t)(b.Get(ctx, "a")); got != "0123456789" {
		t.Fatalf("Get = %q", got)
	}
	if got := readAll(t)(b.GetRange(ctx, "a", 2, 3)); got != "234" {
		t.Fatalf("GetRange = %q", got)
	}
	a, err := b.Attributes(ctx, "dir/b")
	if err != nil || a.Size != 3 {
		t.Fatalf("Attributes = %+v, %v", a, err)
	}
	names, next, err := b.List(ctx, "", "", 0)
	if err != nil || next != "" || strings.Join(names, ",") != "a,dir/b" {
		t.Fatalf("List = %q, %q, %v", names, next, err)
	}
	st := b.Stats()
	want := fallback.Stats{Reads: 5, FallbackReads: 4, FallbackServed: 4, FallbackBytes: 13}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	if s.Calls(faulty.OpGet) != 1 || s.Calls(faulty.OpGetRange) != 1 || s.Calls(faulty.OpAttributes) != 1 || s.Calls(faulty.OpList) != 1 {
		t.Fatal("the secondary did not serve each read once")
	}
}

// TestNotExist: the primary's ErrNotExist is the answer unless
// FallbackOnNotExist.
func TestNotExist(t *testing.T) {
	ctx := context.Background()
	b, p, s := pair(t, fallback.Options{}, faulty.Options{})
	p.Lose("a")
	_, err := b.Get(ctx, "a")
	if !errors.Is(err, objectstore.ErrNotExist) || secondaryCalls(s) != 0 {
		t.Fatalf("Get of an object the primary lost = %v with %d secondary calls; want ErrNotExist from the primary alone", err, secondaryCalls(s))
	}

	b, p, s = pair(t, fallback.Options{FallbackOnNotExist: true}, faulty.Options{})
	p.Lose("a")
	if got := readAll(t)(b.GetRange(ctx, "a", 5, -1)); got != "56789" {
		t.Fatalf("GetRange = %q", got)
	}
	if a, err := b.Attributes(ctx, "a"); err != nil || a.Size != 10 {
		t.Fatalf("Attributes = %+v, %v", a, err)
	}
	if st := b.Stats(); st.FallbackServed != 2 {
		t.Fatalf("stats %+v", st)
	}
	// Missing on both: ErrNotExist, naming the object.
	_, err = b.Get(ctx, "nothing")
	if !errors.Is(err, objectstore.ErrNotExist) || !strings.Contains(err.Error(), "nothing") {
		t.Fatalf("Get of a missing object = %v", err)
	}
	if s.Calls(faulty.OpGet) != 1 {
		t.Fatalf("%d secondary Gets, want 1", s.Calls(faulty.OpGet))
	}
}

// TestDefinitiveErrors: an invalid range or name is the primary's answer;
// the secondary is not asked.
func TestDefinitiveErrors(t *testing.T) {
	ctx := context.Background()
	b, _, s := pair(t, fallback.Options{FallbackOnNotExist: true}, faulty.Options{})
	if _, err := b.GetRange(ctx, "a", 11, 1); !errors.Is(err, objectstore.ErrInvalidRange) {
		t.Fatalf("GetRange past the end = %v", err)
	}
	if _, err := b.Get(ctx, "../x"); !errors.Is(err, objectstore.ErrInvalidName) {
		t.Fatalf("Get(../x) = %v", err)
	}
	if n := secondaryCalls(s); n != 0 {
		t.Fatalf("%d secondary calls for definitive answers", n)
	}
}

// gatedSleep is a faulty Sleep that blocks until its context ends (then
// records that it did) or the gate closes.
type gatedSleep struct {
	gate      chan struct{}
	cancelled atomic.Int64
	once      sync.Once
}

func newGatedSleep() *gatedSleep { return &gatedSleep{gate: make(chan struct{})} }

func (g *gatedSleep) sleep(ctx context.Context, _ time.Duration) error {
	select {
	case <-ctx.Done():
		g.cancelled.Add(1)
		return ctx.Err()
	case <-g.gate:
		return nil
	}
}

func (g *gatedSleep) open() { g.once.Do(func() { close(g.gate) }) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSlowPrimaryHedged: a primary that has not answered within HedgeDelay
// loses to the secondary, and its call is cancelled.
func TestSlowPrimaryHedged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // longer than waitFor
	defer cancel()
	g := newGatedSleep()
	defer g.open()
	b, p, _ := pair(t, fallback.Options{HedgeDelay: time.Millisecond}, faulty.Options{Sleep: g.sleep})
	p.Inject(faulty.Fault{Ops: readOps, Latency: time.Hour})
	if got := readAll(t)(b.GetRange(ctx, "a", 0, 4)); got != "0123" {
		t.Fatalf("GetRange = %q", got)
	}
	if a, err := b.Attributes(ctx, "a"); err != nil || a.Size != 10 {
		t.Fatalf("Attributes = %+v, %v", a, err)
	}
	st := b.Stats()
	if st.HedgedReads != 2 || st.FallbackReads != 2 || st.FallbackServed != 2 {
		t.Fatalf("stats %+v, want 2 hedged reads served by the secondary", st)
	}
	waitFor(t, "the primary's calls to be cancelled", func() bool { return g.cancelled.Load() == 2 })
}

// TestFastPrimaryNotHedged: a primary that answers within HedgeDelay is
// the only store asked, and the call does not wait for the delay.
func TestFastPrimaryNotHedged(t *testing.T) {
	ctx := context.Background()
	b, _, s := pair(t, fallback.Options{HedgeDelay: time.Hour}, faulty.Options{})
	start := time.Now()
	for range 10 {
		if got := readAll(t)(b.Get(ctx, "a")); got != "0123456789" {
			t.Fatalf("Get = %q", got)
		}
	}
	if el := time.Since(start); el > 30*time.Second {
		t.Fatalf("10 reads took %v", el)
	}
	if n := secondaryCalls(s); n != 0 || b.Stats().HedgedReads != 0 {
		t.Fatalf("%d secondary calls, stats %+v", n, b.Stats())
	}
}

// TestHedgedSecondaryFails: when the hedged secondary fails, the slow
// primary's answer is still awaited and returned; when the primary then
// fails too, the error has both.
func TestHedgedSecondaryFails(t *testing.T) {
	ctx := context.Background()
	g := newGatedSleep()
	defer g.open()
	b, p, s := pair(t, fallback.Options{HedgeDelay: time.Millisecond}, faulty.Options{Sleep: g.sleep})
	p.Inject(faulty.Fault{Ops: readOps, Latency: time.Hour, Count: 1})
	s.Inject(faulty.Fault{Ops: readOps, Err: faulty.ErrInjected})
	done := make(chan string)
	go func() {
		rc, err := b.Get(ctx, "a")
		if err != nil {
			done <- err.Error()
			return
		}
		p, _ := io.ReadAll(rc)
		rc.Close()
		done <- string(p)
	}()
	waitFor(t, "the hedge to fail", func() bool { return s.Calls(faulty.OpGet) == 1 })
	g.open() // the primary answers
	if got := <-done; got != "0123456789" {
		t.Fatalf("Get = %q", got)
	}
	if st := b.Stats(); st.HedgedReads != 1 || st.FallbackServed != 0 || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestBothFail: the error names the object and wraps both errors, except a
// secondary's ErrNotExist when the primary failed otherwise.
func TestBothFail(t *testing.T) {
	ctx := context.Background()
	b, p, s := pair(t, fallback.Options{}, faulty.Options{})
	p.Inject(faulty.Fault{Ops: readOps, Err: faulty.ErrTransient})
	rs := s.Inject(faulty.Fault{Ops: readOps, Err: faulty.ErrInjected})
	_, err := b.GetRange(ctx, "dir/b", 0, 1)
	var bf *fallback.BothFailedError
	if err == nil || !errors.As(err, &bf) || !strings.Contains(err.Error(), "dir/b") ||
		!errors.Is(err, faulty.ErrInjected) || !errors.Is(err, faulty.ErrTransient) ||
		!strings.Contains(err.Error(), "primary: ") || !strings.Contains(err.Error(), "secondary: ") {
		t.Fatalf("GetRange with both failing = %v", err)
	}
	t.Logf("error: %v", err)
	if st := b.Stats(); st.Failed != 1 {
		t.Fatalf("stats %+v", st)
	}
	rs()
	// The primary is transiently down and the secondary lacks the object:
	// not ErrNotExist (the primary may have it), and retryable.
	s.Lose("a")
	_, err = b.Attributes(ctx, "a")
	if err == nil || errors.Is(err, objectstore.ErrNotExist) || !objectstore.IsTransient(err) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Attributes, primary transient and secondary missing = %v; want a transient error quoting the secondary", err)
	}
	// Both say the object does not exist: ErrNotExist.
	b2, p2, s2 := pair(t, fallback.Options{FallbackOnNotExist: true}, faulty.Options{})
	p2.Lose("a")
	s2.Lose("a")
	if _, err := b2.Get(ctx, "a"); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("Get missing on both = %v", err)
	}
}

// TestContextCancel: a call ends with its context even when neither store
// honours it (the primary's call is hedged, and both hang); a cancelled
// context fails at once.
func TestContextCancel(t *testing.T) {
	b, p, s := pair(t, fallback.Options{HedgeDelay: time.Millisecond}, faulty.Options{})
	stuck := make(chan struct{})
	defer close(stuck)
	hang := func(string) bool {
		<-stuck // a store that ignores its context until the test ends
		return false
	}
	p.Inject(faulty.Fault{Ops: readOps, Match: hang})
	s.Inject(faulty.Fault{Ops: readOps, Match: hang})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := b.Get(ctx, "a")
		errc <- err
	}()
	waitFor(t, "the hedge", func() bool { return s.Calls(faulty.OpGet) == 1 })
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "get a") {
			t.Fatalf("Get cancelled = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Get did not end with its context")
	}
	if _, err := b.Attributes(ctx, "a"); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "attributes a") {
		t.Fatalf("Attributes with a cancelled context = %v", err)
	}
}

// trackBucket counts the readers it returned that are not closed yet, and
// returns readers that fail once the call's context has ended (as the s3
// backend's do).
type trackBucket struct {
	objectstore.Bucket
	open, opened atomic.Int64
}

type trackReader struct {
	ctx context.Context
	r   io.Reader
	b   *trackBucket
}

func (r *trackReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func (r *trackReader) Close() error { r.b.open.Add(-1); return nil }

func (b *trackBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	// Like a store that answered just before the cancellation arrived.
	data, err := objectstore.ReadAll(context.Background(), b.Bucket, name)
	if err != nil {
		return nil, err
	}
	b.open.Add(1)
	b.opened.Add(1)
	return &trackReader{ctx: ctx, r: bytes.NewReader(data), b: b}, nil
}

// TestReaders: the winner's reader stays readable after the call returned
// (its context ends at Close); a loser's reader that arrives late is
// closed.
func TestReaders(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // longer than waitFor
	defer cancel()
	g := newGatedSleep()
	pt := &trackBucket{Bucket: objectstore.NewMemBucket()}
	st := &trackBucket{Bucket: objectstore.NewMemBucket()}
	put(t, pt, "a", "primary")
	put(t, st, "a", "secondary")
	// The primary ignores cancellation: it answers once the gate opens.
	p := faulty.New(pt, faulty.Options{Sleep: func(ctx context.Context, _ time.Duration) error { <-g.gate; return nil }})
	p.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpGet}, Latency: time.Hour, Count: 1})
	b := newBucket(t, p, st, fallback.Options{HedgeDelay: time.Millisecond})
	defer b.Close()
	rc, err := b.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || string(got) != "secondary" {
		t.Fatalf("read %q, %v", got, err)
	}
	if st.open.Load() != 1 {
		t.Fatal("the winner's reader is not open")
	}
	rc.Close()
	rc.Close() // idempotent
	if st.open.Load() != 0 {
		t.Fatal("the winner's reader is not closed")
	}
	g.open()
	waitFor(t, "the primary's late reader to be closed", func() bool { return pt.opened.Load() == 1 && pt.open.Load() == 0 })
	// The primary answers first now: its reader is returned, usable.
	if got := readAll(t)(b.Get(ctx, "a")); got != "primary" {
		t.Fatalf("Get = %q", got)
	}
	if n := b.Stats().FallbackBytes; n != uint64(len("secondary")) {
		t.Fatalf("FallbackBytes = %d", n)
	}
}

// TestWrites: Put and Delete go to the primary only; Close closes both.
func TestWrites(t *testing.T) {
	ctx := context.Background()
	b, p, s := pair(t, fallback.Options{}, faulty.Options{})
	put(t, b, "new", "x")
	if err := b.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if p.Calls(faulty.OpPut) != 1 || p.Calls(faulty.OpDelete) != 1 || s.Calls(faulty.OpPut) != 0 || s.Calls(faulty.OpDelete) != 0 {
		t.Fatal("writes did not go to the primary alone")
	}
	if _, err := s.Attributes(ctx, "a"); err != nil {
		t.Fatalf("the secondary's copy was deleted: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for i, bk := range []objectstore.Bucket{p, s} {
		if _, err := bk.Get(ctx, "dir/b"); !errors.Is(err, objectstore.ErrClosed) {
			t.Fatalf("bucket %d after Close: %v", i, err)
		}
	}
}

func TestNew(t *testing.T) {
	m := objectstore.NewMemBucket()
	if _, err := fallback.New(m, nil, fallback.Options{}); err == nil {
		t.Fatal("nil secondary accepted")
	}
	if _, err := fallback.New(m, m, fallback.Options{HedgeDelay: -1}); err == nil {
		t.Fatal("negative HedgeDelay accepted")
	}
}
