package faulty_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/erasure"
	"github.com/tierkv/tierkv/objectstore/faulty"
	"github.com/tierkv/tierkv/objectstore/objectstoretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAcceptanceNoFaults(t *testing.T) {
	objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket {
		return faulty.New(objectstore.NewMemBucket(), faulty.Options{})
	})
}

type sleeps struct{ total time.Duration }

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error { s.total += d; return ctx.Err() }

func TestFaults(t *testing.T) {
	ctx := context.Background()
	var sl sleeps
	fb := faulty.New(objectstore.NewMemBucket(), faulty.Options{Sleep: sl.sleep})
	defer fb.Close()
	data := []byte("0123456789")
	objectstoretest.Put(t, fb, "a/x", data)
	objectstoretest.Put(t, fb, "b/y", data)

	// Transient errors on the first two Gets of a/..., healed by retries.
	remove := fb.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpGet}, Match: func(n string) bool { return strings.HasPrefix(n, "a/") }, Err: faulty.ErrTransient, Count: 2})
	fb.ResetCalls()
	rb := objectstore.WithRetry(fb, objectstore.RetryOptions{Sleep: func(ctx context.Context, d time.Duration) error { return nil }})
	if got := objectstoretest.Get(t, rb, "a/x"); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if fb.Calls(faulty.OpGet) != 3 {
		t.Fatalf("%d Gets, want 3 (2 failed + 1)", fb.Calls(faulty.OpGet))
	}
	remove()

	// A permanent error on Put of matching names only, not retried.
	remove = fb.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpPut}, Match: func(n string) bool { return n == "b/y" }, Err: faulty.ErrInjected})
	fb.ResetCalls()
	err := rb.Put(ctx, "b/y", bytes.NewReader(data), 10)
	if !errors.Is(err, faulty.ErrInjected) || !strings.Contains(err.Error(), "b/y") || fb.Calls(faulty.OpPut) != 1 {
		t.Fatalf("Put = %v after %d calls", err, fb.Calls(faulty.OpPut))
	}
	objectstoretest.Put(t, fb, "b/z", data)
	remove()

	// Latency goes through the injected sleep.
	fb.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpAttributes}, Latency: time.Hour, Count: 1})
	if _, err := fb.Attributes(ctx, "a/x"); err != nil || sl.total != time.Hour {
		t.Fatalf("Attributes = %v, slept %v", err, sl.total)
	}

	// Lost: not found and not listed, until written again.
	fb.Lose("a/x")
	if _, err := fb.Get(ctx, "a/x"); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("Get of a lost object = %v", err)
	}
	if _, err := fb.Attributes(ctx, "a/x"); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("Attributes of a lost object = %v", err)
	}
	if got := objectstoretest.ListAll(t, fb, "", 0); !slices.Equal(got, []string{"b/y", "b/z"}) {
		t.Fatalf("List = %q", got)
	}
	objectstoretest.Put(t, fb, "a/x", data)
	if got := objectstoretest.Get(t, fb, "a/x"); !bytes.Equal(got, data) {
		t.Fatal("Put did not restore a lost object")
	}

	// Corrupt: reads differ in one byte.
	fb.Corrupt("b/y")
	got := objectstoretest.Get(t, fb, "b/y")
	if len(got) != len(data) || bytes.Equal(got, data) {
		t.Fatalf("Get of a corrupt object = %q", got)
	}
	rc, err := fb.GetRange(ctx, "b/y", 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.ReadFrom(rc)
	rc.Close()
	if buf.Len() != 3 || bytes.Equal(buf.Bytes(), data[2:5]) {
		t.Fatalf("GetRange of a corrupt object = %q", buf.Bytes())
	}
	fb.Restore("b/y")
	if got := objectstoretest.Get(t, fb, "b/y"); !bytes.Equal(got, data) {
		t.Fatal("Restore did not undo Corrupt")
	}
}

// TestErasureOverFaulty runs RS(3,2) over faulty buckets: a lost shard and
// a corrupt shard are rebuilt and reported; failing buckets beyond m make
// the read fail naming them.
func TestErasureOverFaulty(t *testing.T) {
	ctx := context.Background()
	fbs := make([]*faulty.Bucket, 5)
	bs := make([]objectstore.Bucket, 5)
	for i := range fbs {
		fbs[i] = faulty.New(objectstore.NewMemBucket(), faulty.Options{})
		bs[i] = fbs[i]
	}
	var reported [][]erasure.ShardError
	eb, err := erasure.New(bs, erasure.Options{DataShards: 3, ParityShards: 2, OnReconstruct: func(_ string, bad []erasure.ShardError) {
		reported = append(reported, bad)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close()
	data := objectstoretest.Data(3, 100_000)
	objectstoretest.Put(t, eb, "t/1", data)
	fbs[0].Lose("t/1")
	fbs[2].Corrupt("t/1")
	if got := objectstoretest.Get(t, eb, "t/1"); !bytes.Equal(got, data) {
		t.Fatal("reconstructed object differs")
	}
	if len(reported) != 1 || len(reported[0]) != 2 || reported[0][0].Index != 0 || reported[0][1].Index != 2 ||
		!errors.Is(reported[0][0].Err, objectstore.ErrNotExist) || !errors.Is(reported[0][1].Err, erasure.ErrCorruptShard) {
		t.Fatalf("reported %v", reported)
	}
	fbs[4].Inject(faulty.Fault{Err: faulty.ErrInjected})
	_, err = eb.Get(ctx, "t/1")
	var se *erasure.ShardsError
	if !errors.As(err, &se) || !slices.Equal(se.BadIndexes(), []int{0, 2, 4}) {
		t.Fatalf("Get with 3 bad shards = %v", err)
	}
	// A list over lost shards still finds the object (it is listed from
	// buckets 0..m).
	if got := objectstoretest.ListAll(t, eb, "t/", 0); !slices.Equal(got, []string{"t/1"}) {
		t.Fatalf("List = %q", got)
	}
}
