package tiering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/faulty"
)

// tieredDB is a DB whose objects a Manager serves.
type tieredDB struct {
	t     *testing.T
	fs    vfs.FS
	dir   string
	opts  Options
	dbOpt func(objstorage.Provider) *lsm.Options
	m     *Manager
	db    *lsm.DB
	// uploaded sums ObjectsUploaded over closed Managers.
	uploaded uint64
}

func openTiered(t *testing.T, opts Options, dbOpt func(objstorage.Provider) *lsm.Options) *tieredDB {
	t.Helper()
	td := &tieredDB{t: t, fs: opts.FS, dir: opts.Dir, opts: opts, dbOpt: dbOpt}
	td.open()
	t.Cleanup(func() { td.close() })
	return td
}

func (td *tieredDB) open() {
	td.t.Helper()
	m, err := Open(td.opts)
	if err != nil {
		td.t.Fatal(err)
	}
	db, err := lsm.Open(td.dir, td.dbOpt(m))
	if err != nil {
		m.Close()
		td.t.Fatal(err)
	}
	m.Attach(db)
	td.m, td.db = m, db
}

func (td *tieredDB) close() {
	td.t.Helper()
	if td.db == nil {
		return
	}
	td.uploaded += td.m.Metrics().ObjectsUploaded
	if err := td.db.Close(); err != nil {
		td.t.Error(err)
	}
	if err := td.m.Close(); err != nil {
		td.t.Error(err)
	}
	td.db, td.m = nil, nil
}

func (td *tieredDB) reopen() {
	td.t.Helper()
	td.close()
	td.open()
}

func value(i int) []byte {
	return []byte(fmt.Sprintf("value-%06d-%s", i, bytes.Repeat([]byte{'v'}, i%300)))
}

// fillAndTier writes n keys (even numbers: odd ones are absent but inside
// the tables' key ranges), compacts them to the last level, uploads every
// table and blob file and reopens so that every reader is remote.
func fillAndTier(t *testing.T, td *tieredDB, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := td.db.Set([]byte(fmt.Sprintf("key-%06d", 2*i)), value(i), uint64(i+1), lsm.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := td.db.Compact(); err != nil {
		t.Fatal(err)
	}
	if err := td.m.Upload(context.Background()); err != nil {
		t.Fatal(err)
	}
	td.reopen()
	met := td.m.Metrics()
	if met.LocalObjects != 0 || met.RemoteObjects == 0 {
		t.Fatalf("after upload: %d local objects, %d remote; want 0 local", met.LocalObjects, met.RemoteObjects)
	}
}

// TestAbsentKeyZeroGets checks that opening remote tables and looking up
// absent keys never touch the bucket (bloom filters and indexes are kept
// locally), while present keys are read by ranged GETs.
func TestAbsentKeyZeroGets(t *testing.T) {
	fs := vfs.NewMemFS()
	fb := faulty.New(objectstore.NewMemBucket(), faulty.Options{Sleep: noSleep})
	clock := newManualClock()
	td := openTiered(t, testOptions(fs, "/db", fb, nil, allCold(lsm.Leveled), clock), func(p objstorage.Provider) *lsm.Options {
		o := smallDBOptions(fs, lsm.Leveled, clock, p)
		o.BloomBitsPerKey = 30 // false positives ~1e-6: any GET below is a bug
		o.BlockCacheSize = -1  // every read goes to the provider
		return o
	})
	fillAndTier(t, td, 3000)

	fb.ResetCalls()
	td.reopen() // opens every table: footer and metadata must come from local disk
	bloomBefore := td.db.Metrics().BloomFalsePositives
	for i := 0; i < 3000; i++ {
		for _, k := range []string{fmt.Sprintf("key-%06d", 2*i+1), fmt.Sprintf("zzz-%06d", i), fmt.Sprintf("a-%d", i)} {
			if _, _, err := td.db.Get([]byte(k)); !errors.Is(err, lsm.ErrNotFound) {
				t.Fatalf("Get(%s) = %v, want not found", k, err)
			}
		}
	}
	if fp := td.db.Metrics().BloomFalsePositives - bloomBefore; fp != 0 {
		t.Fatalf("%d bloom false positives: the test needs none", fp)
	}
	for _, op := range []faulty.Op{faulty.OpGet, faulty.OpGetRange, faulty.OpAttributes, faulty.OpList} {
		if n := fb.Calls(op); n != 0 {
			t.Fatalf("open and absent-key lookups made %d %s calls, want 0", n, op)
		}
	}

	// Present keys come by ranged GET, then from the disk cache.
	for i := 0; i < 3000; i += 97 {
		v, _, err := td.db.Get([]byte(fmt.Sprintf("key-%06d", 2*i)))
		if err != nil || !bytes.Equal(v, value(i)) {
			t.Fatalf("Get(key %d) = %q, %v", i, v, err)
		}
	}
	gets := fb.Calls(faulty.OpGetRange)
	if gets == 0 {
		t.Fatal("present keys made no ranged GET")
	}
	m0 := td.m.Metrics()
	for i := 0; i < 3000; i += 97 {
		if _, _, err := td.db.Get([]byte(fmt.Sprintf("key-%06d", 2*i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := fb.Calls(faulty.OpGetRange); n != gets {
		t.Fatalf("second read of the same keys made %d more GETs; the disk cache should serve them", n-gets)
	}
	if m1 := td.m.Metrics(); m1.CacheHits <= m0.CacheHits || m1.CacheMisses != m0.CacheMisses {
		t.Fatalf("cache hits %d -> %d, misses %d -> %d", m0.CacheHits, m1.CacheHits, m0.CacheMisses, m1.CacheMisses)
	}
}

// TestCacheBounded checks that the disk cache stays within CacheSize and
// that reads stay correct when it evicts.
func TestCacheBounded(t *testing.T) {
	fs := vfs.NewMemFS()
	fb := faulty.New(objectstore.NewMemBucket(), faulty.Options{Sleep: noSleep})
	clock := newManualClock()
	opts := testOptions(fs, "/db", fb, nil, allCold(lsm.Leveled), clock)
	opts.CacheSize = 3 * opts.ChunkSize
	td := openTiered(t, opts, func(p objstorage.Provider) *lsm.Options {
		o := smallDBOptions(fs, lsm.Leveled, clock, p)
		o.BlockCacheSize = -1
		return o
	})
	fillAndTier(t, td, 3000)
	for round := 0; round < 2; round++ {
		for i := 0; i < 3000; i += 7 {
			v, _, err := td.db.Get([]byte(fmt.Sprintf("key-%06d", 2*i)))
			if err != nil || !bytes.Equal(v, value(i)) {
				t.Fatalf("Get(key %d) = %q, %v", i, v, err)
			}
			if s := td.m.cache.size(); s > opts.CacheSize {
				t.Fatalf("cache holds %d bytes, bound %d", s, opts.CacheSize)
			}
		}
	}
	// The bound is in bytes (an object's last chunk is short, so the file
	// count may exceed CacheSize/ChunkSize): the files on disk must fit.
	names, err := fs.List("/db/tiercache")
	if err != nil {
		t.Fatal(err)
	}
	var onDisk int64
	for _, n := range names {
		st, err := fs.Stat("/db/tiercache/" + n)
		if err != nil {
			t.Fatal(err)
		}
		onDisk += st.Size()
	}
	if onDisk > opts.CacheSize {
		t.Fatalf("%d bytes in %d chunk files in the cache directory, bound %d", onDisk, len(names), opts.CacheSize)
	}
}
