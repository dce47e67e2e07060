package lsm

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm/vfs"
)

var (
	flagSeed  = flag.Uint64("seed", 0, "run the model test with this seed only")
	flagSeeds = flag.Int("seeds", 24, "number of seeds the model test runs per strategy")
)

// oracle is the model: for each key, the mutation with the highest version.
type oracle map[string]modelEntry

type modelEntry struct {
	version uint64
	value   []byte
	deleted bool
}

func (o oracle) apply(key string, e modelEntry) {
	if old, ok := o[key]; !ok || e.version > old.version {
		o[key] = e
	}
}

// smallOptions returns options that make flushes, compactions and level
// changes happen after a few hundred small writes.
func smallOptions(fs vfs.FS, strategy CompactionStrategy, clock Clock) *Options {
	return &Options{
		FS:                     fs,
		Logger:                 discardLogger,
		Clock:                  clock,
		VersionTime:            func(uint64) time.Time { return clock.Now() }, // nothing passes its grace
		CompactionStrategy:     strategy,
		MemTableSize:           64 << 10,
		TargetFileSize:         64 << 10,
		LBaseMaxBytes:          128 << 10,
		LevelMultiplier:        4,
		L0CompactionThreshold:  2,
		SizeTieredMinThreshold: 2,
		SizeTieredMaxThreshold: 4,
		SizeTieredMinTableSize: 16 << 10,
		BlockSize:              1 << 10,
		// Values of 128 bytes and more go to blob files: the tests see
		// both inline and separated values.
		ValueSeparationThreshold: 128,
		BlockCacheSize:           256 << 10,
		WALPreallocateSize:       128 << 10,
	}
}

// TestModel runs random puts and deletes with random versions, gets,
// iterations, flushes, compactions and reopens against an oracle, for both
// compaction strategies. Reproduce a failure with -seed.
func TestModel(t *testing.T) {
	for _, strategy := range []CompactionStrategy{Leveled, SizeTiered} {
		seeds := make([]uint64, 0, *flagSeeds)
		if *flagSeed != 0 {
			seeds = append(seeds, *flagSeed)
		} else {
			for i := 0; i < *flagSeeds; i++ {
				seeds = append(seeds, uint64(i+1)*7919)
			}
		}
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", strategy, seed), func(t *testing.T) {
				runModel(t, strategy, seed, 3000)
			})
		}
	}
}

func runModel(t *testing.T, strategy CompactionStrategy, seed uint64, ops int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	fs := vfs.NewMemFS()
	clock := newManualClock()
	opts := smallOptions(fs, strategy, clock)
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatalf("seed %d: open: %v", seed, err)
	}
	defer func() { db.Close() }()
	model := oracle{}
	key := func() string { return fmt.Sprintf("key-%05d", rng.IntN(600)) }
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d (rerun with -run TestModel -seed %d): %s", seed, seed, fmt.Sprintf(format, args...))
	}
	for i := 0; i < ops; i++ {
		switch r := rng.IntN(1000); {
		case r < 550:
			k, v := key(), rng.Uint64N(1<<20)+1
			val := []byte(fmt.Sprintf("%s@%d:%s", k, v, bytes.Repeat([]byte{'x'}, rng.IntN(300))))
			if err := db.Set([]byte(k), val, v, NoSync); err != nil {
				fail("set: %v", err)
			}
			model.apply(k, modelEntry{version: v, value: val})
		case r < 700:
			k, v := key(), rng.Uint64N(1<<20)+1
			if err := db.Delete([]byte(k), v, NoSync); err != nil {
				fail("delete: %v", err)
			}
			model.apply(k, modelEntry{version: v, deleted: true})
		case r < 900:
			k := key()
			checkGet(t, db, model, k, fail)
		case r < 950:
			checkIter(t, db, model, rng, fail)
		case r < 965:
			if err := db.Flush(); err != nil {
				fail("flush: %v", err)
			}
		case r < 975:
			if err := db.Compact(); err != nil {
				fail("compact: %v", err)
			}
		case r < 990:
			if err := db.WaitForCompactions(); err != nil {
				fail("wait: %v", err)
			}
		default:
			if err := db.Close(); err != nil {
				fail("close: %v", err)
			}
			if db, err = Open("/db", smallOptions(fs, strategy, clock)); err != nil {
				fail("reopen: %v", err)
			}
		}
	}
	for k := range model {
		checkGet(t, db, model, k, fail)
	}
	checkIter(t, db, model, rng, fail)
	if strategy == Leveled {
		db.mu.Lock()
		err := db.mu.current.v.CheckOrdering()
		db.mu.Unlock()
		if err != nil {
			fail("%v", err)
		}
	}
}

func checkGet(t *testing.T, db *DB, model oracle, k string, fail func(string, ...any)) {
	t.Helper()
	want, ok := model[k]
	e, err := db.GetEntry([]byte(k))
	switch {
	case !ok:
		if !errors.Is(err, ErrNotFound) {
			fail("GetEntry(%s) = %+v, %v; want not found", k, e, err)
		}
	case err != nil:
		fail("GetEntry(%s): %v; want version %d", k, err, want.version)
	case e.Version != want.version || e.Deleted != want.deleted || !bytes.Equal(e.Value, want.value):
		fail("GetEntry(%s) = v%d deleted=%v %q; want v%d deleted=%v", k, e.Version, e.Deleted, e.Value, want.version, want.deleted)
	}
	v, ver, err := db.Get([]byte(k))
	if ok && !want.deleted {
		if err != nil || ver != want.version || !bytes.Equal(v, want.value) {
			fail("Get(%s) = v%d, %v", k, ver, err)
		}
	} else if !errors.Is(err, ErrNotFound) {
		fail("Get(%s) of a deleted or absent key: %v", k, err)
	}
}

func checkIter(t *testing.T, db *DB, model oracle, rng *rand.Rand, fail func(string, ...any)) {
	t.Helper()
	keys := make([]string, 0, len(model))
	for k := range model {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	opts := &IterOptions{IncludeTombstones: rng.IntN(2) == 0}
	if rng.IntN(2) == 0 {
		opts.LowerBound = []byte(fmt.Sprintf("key-%05d", rng.IntN(600)))
	}
	if rng.IntN(2) == 0 {
		opts.UpperBound = []byte(fmt.Sprintf("key-%05d", rng.IntN(600)))
	}
	var want []string
	for _, k := range keys {
		if opts.LowerBound != nil && k < string(opts.LowerBound) || opts.UpperBound != nil && k >= string(opts.UpperBound) {
			continue
		}
		if model[k].deleted && !opts.IncludeTombstones {
			continue
		}
		want = append(want, k)
	}
	it, err := db.NewIter(opts)
	if err != nil {
		fail("NewIter: %v", err)
	}
	var got []string
	for ok := it.First(); ok; ok = it.Next() {
		k := string(it.Key())
		m := model[k]
		if it.Version() != m.version || it.Deleted() != m.deleted || !bytes.Equal(it.Value(), m.value) {
			fail("iter at %s: v%d deleted=%v; want v%d deleted=%v", k, it.Version(), it.Deleted(), m.version, m.deleted)
		}
		got = append(got, k)
	}
	if err := it.Close(); err != nil {
		fail("iter: %v", err)
	}
	if !slices.Equal(got, want) {
		fail("iteration %+v returned %d keys, want %d", opts, len(got), len(want))
	}
}

// TestOrderIndependence applies one set of versioned mutations in several
// random orders, with flushes at random points so that versions of a key
// land in different tables in different orders, and checks that every
// permutation reads and iterates identically.
func TestOrderIndependence(t *testing.T) {
	for _, strategy := range []CompactionStrategy{Leveled, SizeTiered} {
		t.Run(strategy.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(42, uint64(strategy)))
			type mut struct {
				key     string
				version uint64
				value   []byte
			}
			var muts []mut
			for i := 0; i < 4000; i++ {
				m := mut{key: fmt.Sprintf("k%04d", rng.IntN(800)), version: uint64(i + 1)}
				if rng.IntN(4) != 0 {
					m.value = []byte(fmt.Sprintf("value-%d-%s", i, bytes.Repeat([]byte{'v'}, rng.IntN(100))))
				}
				muts = append(muts, m)
			}
			var first string
			for perm := 0; perm < 5; perm++ {
				rng.Shuffle(len(muts), func(i, j int) { muts[i], muts[j] = muts[j], muts[i] })
				clock := newManualClock()
				db, err := Open("/db", smallOptions(vfs.NewMemFS(), strategy, clock))
				if err != nil {
					t.Fatal(err)
				}
				for i, m := range muts {
					if m.value == nil {
						err = db.Delete([]byte(m.key), m.version, NoSync)
					} else {
						err = db.Set([]byte(m.key), m.value, m.version, NoSync)
					}
					if err != nil {
						t.Fatal(err)
					}
					if rng.IntN(500) == 0 || i == len(muts)/2 {
						if err := db.Flush(); err != nil {
							t.Fatal(err)
						}
					}
				}
				var out bytes.Buffer
				for k := 0; k < 800; k++ {
					e, err := db.GetEntry([]byte(fmt.Sprintf("k%04d", k)))
					fmt.Fprintf(&out, "get %d: %d %v %q %v\n", k, e.Version, e.Deleted, e.Value, err)
				}
				it, err := db.NewIter(&IterOptions{IncludeTombstones: true})
				if err != nil {
					t.Fatal(err)
				}
				for ok := it.First(); ok; ok = it.Next() {
					fmt.Fprintf(&out, "iter %s %d %v %q\n", it.Key(), it.Version(), it.Deleted(), it.Value())
				}
				if err := it.Close(); err != nil {
					t.Fatal(err)
				}
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				if perm == 0 {
					first = out.String()
				} else if out.String() != first {
					t.Fatalf("permutation %d reads differently from permutation 0", perm)
				}
			}
		})
	}
}
