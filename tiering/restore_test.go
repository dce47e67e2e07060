package tiering

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/faulty"
)

// snapshotReads renders every point read of keys 0..2n and a full
// iteration.
func snapshotReads(db *lsm.DB, n int) string {
	var out string
	for i := 0; i < 2*n; i++ {
		out += readOut(db, fmt.Sprintf("key-%06d", i)) + "\n"
	}
	return out + iterOut(db, &lsm.IterOptions{IncludeTombstones: true})
}

// buildSource writes n keys (with overwrites and deletes) into a tiered DB
// whose deeper levels are cold, takes a final backup, and returns what
// reads answered.
func buildSource(t *testing.T, b objectstore.Bucket, n int) string {
	t.Helper()
	fs := vfs.NewMemFS()
	clock := newManualClock()
	p := &Policy{Strategy: lsm.Leveled, ColdLevel: 1, BlobColdAge: 0}
	td := openTiered(t, testOptions(fs, "/src", b, nil, p, clock), func(p objstorage.Provider) *lsm.Options {
		return smallDBOptions(fs, lsm.Leveled, clock, p)
	})
	for i := 0; i < n; i++ {
		if err := td.db.Set([]byte(fmt.Sprintf("key-%06d", 2*i)), value(i), uint64(i+1), lsm.NoSync); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			if err := td.db.Delete([]byte(fmt.Sprintf("key-%06d", 2*(i/2))), uint64(i+2), lsm.NoSync); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := td.db.WaitForCompactions(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	// Newer writes, in L0 and the memtable: the final backup flushes and
	// uploads them too, keeping local copies.
	for i := 0; i < 200; i++ {
		if err := td.db.Set([]byte(fmt.Sprintf("key-%06d", 2*i)), []byte(fmt.Sprintf("new-%d", i)), uint64(n+i+10), lsm.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	want := snapshotReads(td.db, n)
	m := td.m.Metrics()
	if m.RemoteObjects < 5 || m.LocalObjects == 0 {
		t.Fatalf("source has %d remote and %d local objects; want many remote and some local", m.RemoteObjects, m.LocalObjects)
	}
	td.close()
	return want
}

// TestRestoreServesBeforeHydration restores a node with many remote tables
// from its latest manifest backup, downloading only metadata; the engine
// answers every read identically while hydration is held back, and after
// it ends.
func TestRestoreServesBeforeHydration(t *testing.T) {
	const n = 4000
	mem := objectstore.NewMemBucket()
	want := buildSource(t, mem, n)

	gate := make(chan struct{})
	fb := faulty.New(mem, faulty.Options{Sleep: func(ctx context.Context, d time.Duration) error {
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})
	// Whole-object GETs (hydration) wait for the gate.
	fb.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpGet}, Latency: time.Hour, Match: func(name string) bool {
		return len(name) > 6 && name[:6] == "node1/" && name[6:12] != "manife"
	}})
	ctx := context.Background()
	fs := vfs.NewMemFS()
	info, err := Restore(ctx, RestoreOptions{FS: fs, Dir: "/dst", NodeID: "node1", Bucket: fb})
	if err != nil {
		t.Fatal(err)
	}
	if info.Objects < 5 {
		t.Fatalf("restored %d objects", info.Objects)
	}
	if got := fb.Calls(faulty.OpGetRange); got != int64(info.Objects) {
		t.Fatalf("restore made %d ranged GETs for %d objects; want one metadata read each", got, info.Objects)
	}
	fb.ResetCalls()
	clock := newManualClock()
	opts := testOptions(fs, "/dst", fb, nil, &Policy{Strategy: lsm.Leveled, ColdLevel: -1, BlobColdAge: -1}, clock)
	td := openTiered(t, opts, func(p objstorage.Provider) *lsm.Options {
		o := smallDBOptions(fs, lsm.Leveled, clock, p)
		// A compaction the open schedules (the source may have left two L0
		// tables) reads remote tables: not what this test counts.
		o.DisableAutomaticCompactions = true
		return o
	})
	if got := fb.Calls(faulty.OpGetRange) + fb.Calls(faulty.OpGet); got != 0 {
		t.Fatalf("opening the restored engine made %d GETs", got)
	}
	var progressMu sync.Mutex
	var lastDone, lastTotal int64
	hydrated := make(chan error, 1)
	go func() {
		hydrated <- td.m.Hydrate(ctx, HydrateOptions{Progress: func(done, total int64) {
			progressMu.Lock()
			lastDone, lastTotal = done, total
			progressMu.Unlock()
		}})
	}()
	if got := snapshotReads(td.db, n); got != want {
		t.Fatal("restored engine answers differently from the source before hydration")
	}
	if m := td.m.Metrics(); m.HydratedObjects != 0 || m.RemoteReads == 0 {
		t.Fatalf("before the gate opened: %d objects hydrated, %d remote reads", m.HydratedObjects, m.RemoteReads)
	}
	close(gate)
	if err := <-hydrated; err != nil {
		t.Fatal(err)
	}
	m := td.m.Metrics()
	if m.RemoteObjects != 0 || m.HydratedBytes != uint64(lastTotal) || lastDone != lastTotal || lastTotal == 0 || lastTotal > info.Bytes {
		t.Fatalf("after hydration: %d remote objects, %d bytes hydrated of %d; progress %d/%d", m.RemoteObjects, m.HydratedBytes, info.Bytes, lastDone, lastTotal)
	}
	before := fb.Calls(faulty.OpGetRange)
	td.m.cache.evictAll()
	if got := snapshotReads(td.db, n); got != want {
		t.Fatal("restored engine answers differently after hydration")
	}
	if after := fb.Calls(faulty.OpGetRange); after != before {
		t.Fatalf("%d GETs after hydration: reads should be local", after-before)
	}
	td.reopen()
	if got := snapshotReads(td.db, n); got != want {
		t.Fatal("restored engine answers differently after reopening")
	}
}

// TestRestoreFromFallback restores with the primary bucket down.
func TestRestoreFromFallback(t *testing.T) {
	const n = 3000
	primary := faulty.New(objectstore.NewMemBucket(), faulty.Options{Sleep: noSleep})
	eb, _ := erasureOver(t, 4, 2)
	// buildSource without fallback would not fill eb: build with both.
	fs := vfs.NewMemFS()
	clock := newManualClock()
	p := &Policy{Strategy: lsm.Leveled, ColdLevel: 1, BlobColdAge: 0}
	td := openTiered(t, testOptions(fs, "/src", primary, eb, p, clock), func(p objstorage.Provider) *lsm.Options {
		return smallDBOptions(fs, lsm.Leveled, clock, p)
	})
	for i := 0; i < n; i++ {
		if err := td.db.Set([]byte(fmt.Sprintf("key-%06d", 2*i)), value(i), uint64(i+1), lsm.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if err := td.db.WaitForCompactions(); err != nil {
		t.Fatal(err)
	}
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := td.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	want := snapshotReads(td.db, n)
	td.close()

	primary.Inject(faulty.Fault{Err: faulty.ErrInjected})
	dfs := vfs.NewMemFS()
	if _, err := Restore(ctx, RestoreOptions{FS: dfs, Dir: "/dst", NodeID: "node1", Bucket: primary, Fallback: eb, Retry: fastRetry}); err != nil {
		t.Fatal(err)
	}
	rd := openTiered(t, testOptions(dfs, "/dst", primary, eb, p, clock), func(p objstorage.Provider) *lsm.Options {
		return smallDBOptions(dfs, lsm.Leveled, clock, p)
	})
	if got := snapshotReads(rd.db, n); got != want {
		t.Fatal("engine restored from the fallback answers differently")
	}
	// Hydration with the primary still down: whole-object reads come from
	// the erasure fallback too.
	if err := rd.m.Hydrate(ctx, HydrateOptions{All: true}); err != nil {
		t.Fatalf("hydrate with the primary down: %v", err)
	}
	m := rd.m.Metrics()
	if m.HydratedObjects == 0 || m.RemoteObjects != 0 || m.FallbackBytes < m.HydratedBytes || m.FallbackReads < m.HydratedObjects {
		t.Fatalf("after hydrating with the primary down: %+v", m)
	}
	if got := snapshotReads(rd.db, n); got != want {
		t.Fatal("engine hydrated from the fallback answers differently")
	}
}

// TestHydrateFallback: hydration downloads of objects the primary lost or
// serves corrupt come from the fallback; every byte is verified, and
// without a fallback a corrupt object is an error naming it that leaves no
// local copy.
func TestHydrateFallback(t *testing.T) {
	const n = 3000
	primary := faulty.New(objectstore.NewMemBucket(), faulty.Options{Sleep: noSleep})
	eb, _ := erasureOver(t, 3, 2)
	fs := vfs.NewMemFS()
	clock := newManualClock()
	p := &Policy{Strategy: lsm.Leveled, ColdLevel: 1, BlobColdAge: 0}
	dbOpts := func(fs vfs.FS) func(p objstorage.Provider) *lsm.Options {
		return func(p objstorage.Provider) *lsm.Options {
			o := smallDBOptions(fs, lsm.Leveled, clock, p)
			o.DisableAutomaticCompactions = true
			return o
		}
	}
	td := openTiered(t, testOptions(fs, "/src", primary, eb, p, clock), func(p objstorage.Provider) *lsm.Options {
		return smallDBOptions(fs, lsm.Leveled, clock, p)
	})
	for i := 0; i < n; i++ {
		if err := td.db.Set([]byte(fmt.Sprintf("key-%06d", 2*i)), value(i), uint64(i+1), lsm.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if err := td.db.WaitForCompactions(); err != nil {
		t.Fatal(err)
	}
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := td.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	want := snapshotReads(td.db, n)
	td.close()

	restore := func(dir string, fallback objectstore.Bucket) *tieredDB {
		if _, err := Restore(ctx, RestoreOptions{FS: fs, Dir: dir, NodeID: "node1", Bucket: primary, Fallback: fallback, Retry: fastRetry}); err != nil {
			t.Fatal(err)
		}
		return openTiered(t, testOptions(fs, dir, primary, fallback, p, clock), dbOpts(fs))
	}
	var names []string
	if err := objectstore.Iter(ctx, primary, "node1/tables/", func(name string) error {
		names = append(names, name)
		return nil
	}); err != nil || len(names) < 4 {
		t.Fatalf("list: %v (%d tables)", err, len(names))
	}
	// Restore reads metadata ranges, which the engine verifies at open
	// (so corrupt ones fail it): fault the objects once restored.
	rd := restore("/dst", eb)
	nd := restore("/dst2", nil)
	lost, corrupt := names[0], names[1]
	var faultedBytes int64
	for _, n := range []string{lost, corrupt} {
		a, err := primary.Attributes(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		faultedBytes += a.Size
	}
	primary.Lose(lost)
	primary.Corrupt(corrupt)
	if err := rd.m.Hydrate(ctx, HydrateOptions{All: true}); err != nil {
		t.Fatalf("hydrate: %v", err)
	}
	// Exactly the two faulted objects came from the fallback: the lost
	// one through the combinator, the corrupt one after its verification
	// failed.
	m := rd.m.Metrics()
	if m.RemoteObjects != 0 || m.FallbackReads != 2 || m.FallbackBytes != uint64(faultedBytes) {
		t.Fatalf("after hydrating with a lost and a corrupt object (%d bytes): %+v", faultedBytes, m)
	}
	if got := snapshotReads(rd.db, n); got != want {
		t.Fatal("hydrated engine answers differently")
	}
	rd.close()

	// No fallback: the corrupt object stays remote, and the error names it.
	primary.Restore(lost)
	err := nd.m.Hydrate(ctx, HydrateOptions{All: true})
	base := corrupt[strings.LastIndexByte(corrupt, '/')+1:]
	if !errors.Is(err, errBadDownload) || !strings.Contains(err.Error(), base) {
		t.Fatalf("hydrate of a corrupt object without a fallback: %v; want a verification error naming %s", err, base)
	}
	if _, serr := fs.Stat("/dst2/" + base); serr == nil {
		t.Fatalf("unverified copy %s left behind", base)
	}
	if m := nd.m.Metrics(); m.RemoteObjects != 1 {
		t.Fatalf("%d remote objects after hydrating all but the corrupt one", m.RemoteObjects)
	}
}

// TestHydrateCrash: hydrated copies are written without fsync; after a
// crash, Open verifies them against the catalog and deletes torn ones, so
// every read still answers as on the source.
func TestHydrateCrash(t *testing.T) {
	const n = 3000
	mem := objectstore.NewMemBucket()
	src := buildSource(t, mem, n)
	ctx := context.Background()
	fs := vfs.NewMemFS()
	if _, err := Restore(ctx, RestoreOptions{FS: fs, Dir: "/dst", NodeID: "node1", Bucket: mem}); err != nil {
		t.Fatal(err)
	}
	clock := newManualClock()
	opts := testOptions(fs, "/dst", mem, nil, &Policy{Strategy: lsm.Leveled, ColdLevel: -1, BlobColdAge: -1}, clock)
	dbOpts := func(fs vfs.FS) func(p objstorage.Provider) *lsm.Options {
		return func(p objstorage.Provider) *lsm.Options {
			o := smallDBOptions(fs, lsm.Leveled, clock, p)
			o.DisableAutomaticCompactions = true
			return o
		}
	}
	td := openTiered(t, opts, dbOpts(fs))
	if err := td.m.Hydrate(ctx, HydrateOptions{}); err != nil {
		t.Fatal(err)
	}
	hydrated := td.m.Metrics().HydratedObjects
	if got := snapshotReads(td.db, n); got != src {
		t.Fatalf("after hydration, reads differ from the source: %s", firstDiff(got, src))
	}
	// A flush syncs the directory: the hydrated names become durable,
	// their unsynced contents not.
	if err := td.db.Set([]byte("zzz"), []byte("x"), 1, lsm.Sync); err != nil {
		t.Fatal(err)
	}
	if err := td.db.Flush(); err != nil {
		t.Fatal(err)
	}
	want := snapshotReads(td.db, n) + readOut2(td.db)
	for seed := uint64(1); seed <= 3; seed++ {
		crashed := fs.CrashClone(rand.New(rand.NewPCG(seed, 0)))
		copts := opts
		copts.FS = crashed
		cd := openTiered(t, copts, dbOpts(crashed))
		if got := snapshotReads(cd.db, n) + readOut2(cd.db); got != want {
			t.Fatalf("seed %d: after a crash during hydration, reads differ: %s", seed, firstDiff(got, want))
		}
		m := cd.m.Metrics()
		if m.RemoteObjects == 0 {
			t.Fatalf("seed %d: no hydrated copy was dropped by the crash (%d hydrated)", seed, hydrated)
		}
		cd.close()
	}
	// A clean close syncs: a crash after it keeps every copy.
	td.close()
	crashed := fs.CrashClone(rand.New(rand.NewPCG(9, 0)))
	copts := opts
	copts.FS = crashed
	cd := openTiered(t, copts, dbOpts(crashed))
	if m := cd.m.Metrics(); m.RemoteObjects != 0 {
		t.Fatalf("after a clean close and a crash: %d remote objects", m.RemoteObjects)
	}
	if got := snapshotReads(cd.db, n) + readOut2(cd.db); got != want {
		t.Fatal("after a clean close and a crash, reads differ")
	}
}

func readOut2(db *lsm.DB) string {
	if v, _, err := db.Get([]byte("zzz")); err == nil {
		return string(v) + "zz"
	}
	return "missing"
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d: got %.200q, want %.200q", i, g[i], w[i])
		}
	}
	return fmt.Sprintf("%d lines, want %d", len(g), len(w))
}
