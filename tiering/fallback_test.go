package tiering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/erasure"
	"github.com/tierkv/tierkv/objectstore/faulty"
)

func readAll(t *testing.T, db *lsm.DB, n int) error {
	t.Helper()
	for i := 0; i < n; i++ {
		v, _, err := db.Get([]byte(fmt.Sprintf("key-%06d", 2*i)))
		if err != nil {
			return err
		}
		if !bytes.Equal(v, value(i)) {
			t.Fatalf("Get(key %d) = %q, want %q", i, v, value(i))
		}
	}
	return nil
}

// noCacheDB disables both the engine's block cache and the disk cache, so
// that every read of a remote block reaches a bucket.
func noCacheDB(fs vfs.FS, clock lsm.Clock) func(objstorage.Provider) *lsm.Options {
	return func(p objstorage.Provider) *lsm.Options {
		o := smallDBOptions(fs, lsm.Leveled, clock, p)
		o.BlockCacheSize = -1
		return o
	}
}

// TestErasureFallback: with the primary failing, reads of remote tables
// come from RS(4,2) shards; with m shards bad they are reconstructed; with
// m+1 the error names the table.
func TestErasureFallback(t *testing.T) {
	fs := vfs.NewMemFS()
	clock := newManualClock()
	primary := faulty.New(objectstore.NewMemBucket(), faulty.Options{Sleep: noSleep})
	eb, shards := erasureOver(t, 4, 2)
	opts := testOptions(fs, "/db", primary, eb, allCold(lsm.Leveled), clock)
	opts.CacheSize = -1
	td := openTiered(t, opts, noCacheDB(fs, clock))
	const n = 2000
	fillAndTier(t, td, n)
	if err := readAll(t, td.db, n); err != nil {
		t.Fatal(err)
	}
	if f := td.m.Metrics().FallbackReads; f != 0 {
		t.Fatalf("%d fallback reads with a healthy primary", f)
	}

	// The primary is down (every read fails): the fallback serves.
	primary.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpGet, faulty.OpGetRange}, Err: faulty.ErrInjected})
	if err := readAll(t, td.db, n); err != nil {
		t.Fatalf("primary down: %v", err)
	}
	if td.m.Metrics().FallbackReads == 0 {
		t.Fatal("no fallback reads counted")
	}

	// m = 2 shards unreadable (one missing, one corrupt): reconstructed.
	shardErr := func(i int, err error) func() {
		return shards[i].Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpGet, faulty.OpGetRange}, Err: err})
	}
	r0 := shardErr(0, objectstore.ErrNotExist)
	r1 := shardErr(3, faulty.ErrInjected)
	if err := readAll(t, td.db, n); err != nil {
		t.Fatalf("2 of 6 shards bad: %v", err)
	}
	// m+1: a clear error naming the table.
	r2 := shardErr(5, faulty.ErrInjected)
	err := readAll(t, td.db, n)
	if err == nil || !errors.Is(err, erasure.ErrTooManyBadShards) || !strings.Contains(err.Error(), ".sst") {
		t.Fatalf("3 of 6 shards bad: err = %v; want ErrTooManyBadShards naming the table", err)
	}
	t.Logf("m+1 error: %.300s", err)
	r0()
	r1()
	r2()
}

// TestErasureFallbackCorruptShards corrupts m shards of every object: the
// erasure code reconstructs; m+1 corrupt shards give an error.
func TestErasureFallbackCorruptShards(t *testing.T) {
	fs := vfs.NewMemFS()
	clock := newManualClock()
	primary := faulty.New(objectstore.NewMemBucket(), faulty.Options{Sleep: noSleep})
	eb, shards := erasureOver(t, 3, 2)
	opts := testOptions(fs, "/db", primary, eb, allCold(lsm.Leveled), clock)
	opts.CacheSize = -1
	td := openTiered(t, opts, noCacheDB(fs, clock))
	const n = 1000
	fillAndTier(t, td, n)
	primary.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpGet, faulty.OpGetRange}, Err: faulty.ErrTransient})
	var names []string
	if err := objectstore.Iter(context.Background(), shards[0], "node1/tables/", func(n string) error {
		names = append(names, n)
		return nil
	}); err != nil || len(names) == 0 {
		t.Fatalf("list shards: %v (%d names)", err, len(names))
	}
	for _, name := range names {
		shards[1].Corrupt(name)
		shards[4].Corrupt(name)
	}
	if err := readAll(t, td.db, n); err != nil {
		t.Fatalf("2 corrupt shards of RS(3,2): %v", err)
	}
	for _, name := range names {
		shards[2].Corrupt(name)
	}
	if err := readAll(t, td.db, n); !errors.Is(err, erasure.ErrTooManyBadShards) || !strings.Contains(err.Error(), ".sst") {
		t.Fatalf("3 corrupt shards: err = %v; want too many bad shards, naming the table", err)
	}
}

// TestHedgedRead: a primary slower than HedgeDelay loses to the fallback.
func TestHedgedRead(t *testing.T) {
	fs := vfs.NewMemFS()
	clock := newManualClock()
	// The primary's latency is real time, cancelled when the hedge wins.
	primary := faulty.New(objectstore.NewMemBucket(), faulty.Options{})
	eb, _ := erasureOver(t, 2, 1)
	opts := testOptions(fs, "/db", primary, eb, allCold(lsm.Leveled), clock)
	opts.CacheSize = -1
	opts.HedgeDelay = 5 * time.Millisecond
	td := openTiered(t, opts, noCacheDB(fs, clock))
	fillAndTier(t, td, 500)
	remove := primary.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpGetRange}, Latency: time.Hour})
	defer remove()
	start := time.Now()
	if err := readAll(t, td.db, 50); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Minute {
		t.Fatalf("hedged reads took %v", el)
	}
	if m := td.m.Metrics(); m.HedgedReads == 0 {
		t.Fatalf("no hedged reads: %+v", m)
	}
}

// TestMinIOStoppedFallback: with MinIO down, reads of remote tables are
// served from the erasure fallback.
func TestMinIOStoppedFallback(t *testing.T) {
	b, srv := killableMinioBucket(t)
	fs := vfs.NewMemFS()
	clock := newManualClock()
	eb, _ := erasureOver(t, 4, 2)
	opts := testOptions(fs, "/db", b, eb, allCold(lsm.Leveled), clock)
	opts.CacheSize = -1
	td := openTiered(t, opts, noCacheDB(fs, clock))
	const n = 1000
	fillAndTier(t, td, n)
	srv.Kill(t)
	if err := readAll(t, td.db, n); err != nil {
		t.Fatalf("MinIO down: %v", err)
	}
	if td.m.Metrics().FallbackReads == 0 {
		t.Fatal("no fallback reads counted")
	}
	srv.Restart(t)
}
