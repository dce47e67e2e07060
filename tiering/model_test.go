package tiering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/localfs"
)

// readOut renders a point read.
func readOut(db *lsm.DB, k string) string {
	e, err := db.GetEntry([]byte(k))
	if errors.Is(err, lsm.ErrNotFound) {
		return "absent"
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("v%d del=%v %q", e.Version, e.Deleted, e.Value)
}

// iterOut renders an iteration.
func iterOut(db *lsm.DB, o *lsm.IterOptions) string {
	it, err := db.NewIter(o)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for ok := it.First(); ok; ok = it.Next() {
		fmt.Fprintf(&b, "%s v%d %v %x|", it.Key(), it.Version(), it.Deleted(), it.Value())
	}
	if err := it.Close(); err != nil {
		return "error: " + err.Error()
	}
	return b.String()
}

// runTieredModel runs one seeded op log (the lsm model test's mix, plus
// upload passes, manifest backups and GC) against a DB without tiering and
// a DB with tiering on bucket, and checks that every read answers the same.
func runTieredModel(t *testing.T, strategy lsm.CompactionStrategy, seed uint64, ops int, bucket objectstore.Bucket) {
	rng := rand.New(rand.NewPCG(seed, 1))
	clock := newManualClock()
	plainFS := vfs.NewMemFS()
	plain, err := lsm.Open("/db", smallDBOptions(plainFS, strategy, clock, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { plain.Close() }()
	fs := vfs.NewMemFS()
	td := openTiered(t, testOptions(fs, "/db", bucket, nil, allCold(strategy), clock), func(p objstorage.Provider) *lsm.Options {
		return smallDBOptions(fs, strategy, clock, p)
	})
	ctx := context.Background()
	key := func() string { return fmt.Sprintf("key-%05d", rng.IntN(600)) }
	fail := func(i int, format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d op %d: %s", seed, i, fmt.Sprintf(format, args...))
	}
	both := func(i int, f func(db *lsm.DB) error) {
		t.Helper()
		if err := f(plain); err != nil {
			fail(i, "without tiering: %v", err)
		}
		if err := f(td.db); err != nil {
			fail(i, "with tiering: %v", err)
		}
	}
	for i := 0; i < ops; i++ {
		switch r := rng.IntN(1000); {
		case r < 550:
			k, v := key(), rng.Uint64N(1<<20)+1
			val := []byte(fmt.Sprintf("%s@%d:%s", k, v, bytes.Repeat([]byte{'x'}, rng.IntN(300))))
			both(i, func(db *lsm.DB) error { return db.Set([]byte(k), val, v, lsm.NoSync) })
		case r < 700:
			k, v := key(), rng.Uint64N(1<<20)+1
			both(i, func(db *lsm.DB) error { return db.Delete([]byte(k), v, lsm.NoSync) })
		case r < 880:
			k := key()
			if a, b := readOut(plain, k), readOut(td.db, k); a != b {
				fail(i, "Get(%s): without tiering %s, with %s", k, a, b)
			}
		case r < 920:
			o := &lsm.IterOptions{IncludeTombstones: rng.IntN(2) == 0}
			if rng.IntN(2) == 0 {
				o.LowerBound = []byte(key())
			}
			if a, b := iterOut(plain, o), iterOut(td.db, o); a != b {
				fail(i, "iteration %+v differs:\nwithout tiering %.300s\nwith %.300s", o, a, b)
			}
		case r < 940:
			both(i, func(db *lsm.DB) error { return db.Flush() })
		case r < 950:
			both(i, func(db *lsm.DB) error { return db.Compact() })
		case r < 965:
			both(i, func(db *lsm.DB) error { return db.WaitForCompactions() })
		case r < 980:
			if err := td.m.Upload(ctx); err != nil {
				fail(i, "upload: %v", err)
			}
		case r < 987:
			if err := td.m.Backup(ctx); err != nil {
				fail(i, "backup: %v", err)
			}
			clock.Advance(time.Hour)
			if err := td.m.GC(ctx); err != nil {
				fail(i, "gc: %v", err)
			}
		default:
			if err := plain.Close(); err != nil {
				fail(i, "close: %v", err)
			}
			if plain, err = lsm.Open("/db", smallDBOptions(plainFS, strategy, clock, nil)); err != nil {
				fail(i, "reopen: %v", err)
			}
			td.reopen()
		}
	}
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	td.reopen()
	for k := 0; k < 600; k++ {
		key := fmt.Sprintf("key-%05d", k)
		if a, b := readOut(plain, key), readOut(td.db, key); a != b {
			t.Fatalf("seed %d: final Get(%s): without tiering %s, with %s", seed, key, a, b)
		}
	}
	o := &lsm.IterOptions{IncludeTombstones: true}
	if a, b := iterOut(plain, o), iterOut(td.db, o); a != b {
		t.Fatalf("seed %d: final iteration differs", seed)
	}
	if met := td.m.Metrics(); td.uploaded == 0 || met.RemoteReads == 0 {
		t.Fatalf("seed %d: %d objects uploaded, %d remote reads: tiering did not take part", seed, td.uploaded, met.RemoteReads)
	}
}

// TestModelTiered re-runs the engine's model workload with tiering on
// (every object cold, so most reads are remote) against the engine without
// tiering, on the in-memory and the local file-system buckets.
func TestModelTiered(t *testing.T) {
	for _, strategy := range []lsm.CompactionStrategy{lsm.Leveled, lsm.SizeTiered} {
		for _, seed := range []uint64{7919, 15838, 23757} {
			t.Run(fmt.Sprintf("mem/%s/seed=%d", strategy, seed), func(t *testing.T) {
				runTieredModel(t, strategy, seed, 2000, objectstore.NewMemBucket())
			})
		}
		t.Run(fmt.Sprintf("localfs/%s", strategy), func(t *testing.T) {
			b, err := localfs.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			runTieredModel(t, strategy, 31676, 2000, b)
		})
	}
}

// TestModelTieredMinIO is TestModelTiered against a real MinIO server.
func TestModelTieredMinIO(t *testing.T) {
	b, _ := minioBucket(t)
	for _, strategy := range []lsm.CompactionStrategy{lsm.Leveled, lsm.SizeTiered} {
		t.Run(strategy.String(), func(t *testing.T) {
			runTieredModel(t, strategy, 39595, 1500, b)
		})
	}
}
