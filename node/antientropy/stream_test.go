package antientropy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/ring"
)

// TestStreamCopiesRanges streams two ranges of a replica onto an empty one,
// interrupting the stream and resuming it from the last key applied, and
// checks that exactly the entries of those ranges arrived, tombstones and
// entries older than the grace period included.
func TestStreamCopiesRanges(t *testing.T) {
	clock := newManualClock()
	src := newReplica(t, clock, &Options{MaxBatchKeys: 7})
	dst := newReplica(t, clock, nil)
	old := versionAt(clock.Now().Add(-2*testGrace), 0) // past grace: Push would refuse it
	now := versionAt(clock.Now(), 0)
	for i := range 600 {
		k := fmt.Sprintf("key-%04d", i)
		switch i % 5 {
		case 0:
			src.del(t, k, now)
		case 1:
			src.set(t, k, "old", old)
		default:
			src.set(t, k, "v"+k, now)
		}
	}
	ranges := []ring.Range{{Start: 3 << 60, End: 5 << 60}, {Start: 12 << 60, End: 1 << 60}}
	want := dump(t, src.db, ranges)
	if len(want) < 100 || len(want) > 500 {
		t.Fatalf("the ranges hold %d of 600 keys; pick other ranges", len(want))
	}

	ctx := context.Background()
	var last []byte
	batches := 0
	errCut := errors.New("connection lost")
	apply := func(es []lsm.Entry) error {
		if len(es) > 7 {
			t.Fatalf("batch of %d entries, bound 7", len(es))
		}
		if err := dst.local.ApplyStream(ctx, es); err != nil {
			return err
		}
		last = es[len(es)-1].Key
		if batches++; batches == 10 {
			return errCut
		}
		return nil
	}
	if err := src.local.Stream(ctx, ranges, nil, 0, apply); !errors.Is(err, errCut) {
		t.Fatalf("interrupted stream: %v", err)
	}
	if got := dump(t, dst.db, nil); len(got) != 70 {
		t.Fatalf("after 10 batches of 7: %d entries", len(got))
	}
	if err := src.local.Stream(ctx, ranges, last, 0, apply); err != nil {
		t.Fatal(err)
	}
	requireSame(t, "streamed ranges", want, dump(t, dst.db, nil))

	// minVersion leaves out older entries.
	var recent []lsm.Entry
	for _, e := range want {
		if e.Version >= now {
			recent = append(recent, e)
		}
	}
	var got []lsm.Entry
	if err := src.local.Stream(ctx, ranges, nil, now, func(es []lsm.Entry) error { got = append(got, es...); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(recent) == len(want) {
		t.Fatal("no old entries in the ranges")
	}
	requireSame(t, "stream with minVersion", recent, got)

	// Overlapping ranges are refused.
	bad := []ring.Range{{Start: 1, End: 10}, {Start: 5, End: 20}}
	if err := src.local.Stream(ctx, bad, nil, 0, apply); !errors.Is(err, ErrInvalidRanges) {
		t.Fatalf("overlapping ranges: %v", err)
	}
}

// TestStreamCancelled stops at a cancelled context.
func TestStreamCancelled(t *testing.T) {
	clock := newManualClock()
	src := newReplica(t, clock, &Options{MaxBatchKeys: 1})
	for i := range 100 {
		src.set(t, fmt.Sprintf("k%d", i), "v", versionAt(clock.Now(), 0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	n := 0
	err := src.local.Stream(ctx, []ring.Range{{}}, nil, 0, func([]lsm.Entry) error {
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled stream: %v after %d batches", err, n)
	}
}
