package lsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm/vfs"
)

func openMem(t *testing.T, opts *Options) (*DB, *vfs.MemFS) {
	t.Helper()
	fs := vfs.NewMemFS()
	if opts == nil {
		opts = smallOptions(fs, Leveled, newManualClock())
	}
	opts.FS = fs
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	return db, fs
}

// TestInvalidInputChangesNothing checks that every kind of bad mutation is
// rejected with ErrInvalidInput and that a batch holding one bad mutation
// applies none of its good ones.
func TestInvalidInputChangesNothing(t *testing.T) {
	db, _ := openMem(t, nil)
	defer db.Close()
	cases := []struct {
		name  string
		key   []byte
		value []byte
		ver   uint64
	}{
		{"empty key", nil, []byte("v"), 1},
		{"oversized key", bytes.Repeat([]byte{'k'}, 64<<10+1), []byte("v"), 1},
		{"oversized value", []byte("k"), make([]byte, 16<<20+1), 1},
		{"invalid UTF-8 key", []byte{0xff, 0xfe}, []byte("v"), 1},
		{"version zero", []byte("k"), []byte("v"), 0},
	}
	for _, c := range cases {
		var b Batch
		b.Set([]byte("good"), []byte("v"), 5)
		b.Set(c.key, c.value, c.ver)
		err := db.Apply(&b, Sync)
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%s: got %v, want ErrInvalidInput", c.name, err)
		}
		if _, _, err := db.Get([]byte("good")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: the good half of a rejected batch was applied", c.name)
		}
	}
	if m := db.Metrics(); m.UserBytes != 0 {
		t.Fatalf("rejected batches counted %d user bytes", m.UserBytes)
	}
}

func TestOptionsValidate(t *testing.T) {
	bad := []*Options{
		{MemTableSize: 1},
		{L0CompactionThreshold: 10, L0StopWritesThreshold: 5},
		{SizeTieredMinThreshold: 8, SizeTieredMaxThreshold: 4},
		{SizeTieredBucketLow: 2},
		{CompactionStrategy: 7},
		{Compression: 9},
	}
	for i, o := range bad {
		if err := o.EnsureDefaults().Validate(); err == nil {
			t.Errorf("case %d: Validate accepted %+v", i, o)
		}
		if _, err := Open(t.TempDir(), o); err == nil {
			t.Errorf("case %d: Open accepted invalid options", i)
		}
	}
	if err := (&Options{}).EnsureDefaults().Validate(); err != nil {
		t.Fatalf("defaults are invalid: %v", err)
	}
}

// TestTombstonePurge checks that compaction keeps tombstones within the
// grace period, purges them after it, and never purges one while a table
// outside the compaction may still hold an older version of its key.
func TestTombstonePurge(t *testing.T) {
	clock := newManualClock()
	fs := vfs.NewMemFS()
	opts := smallOptions(fs, Leveled, clock)
	opts.VersionTime = DefaultVersionTime
	opts.DisableAutomaticCompactions = true
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := clock.Now()
	for i := 0; i < 100; i++ {
		k := []byte(fmt.Sprintf("k%03d", i))
		if err := db.Set(k, []byte("v"), versionAt(now, 1), NoSync); err != nil {
			t.Fatal(err)
		}
		if err := db.Delete(k, versionAt(now, 2), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Compact(); err != nil {
		t.Fatal(err)
	}
	if m := db.Metrics(); m.TombstonesPurged != 0 {
		t.Fatalf("purged %d tombstones within the grace period", m.TombstonesPurged)
	}
	if e, err := db.GetEntry([]byte("k000")); err != nil || !e.Deleted {
		t.Fatalf("tombstone missing within grace: %+v %v", e, err)
	}

	// An older version of k000 in a table outside the next compaction
	// pins k000's tombstone.
	clock.Advance(opts.TombstoneGracePeriod + time.Hour)
	if err := db.Set([]byte("k000"), []byte("old"), versionAt(now, 0), NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	db.mu.Lock()
	c := &compaction{reason: "test", outputLevel: 6, split: true}
	for _, tb := range db.mu.current.tables[6] {
		c.inputs = append(c.inputs, compactionInput{6, tb})
	}
	db.mu.compacting = true
	db.mu.Unlock()
	err = db.runCompaction(c)
	db.mu.Lock()
	db.mu.compacting = false
	db.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if m := db.Metrics(); m.TombstonesPurged != 99 {
		t.Fatalf("purged %d tombstones, want 99 (all but the pinned k000)", m.TombstonesPurged)
	}
	if _, _, err := db.Get([]byte("k000")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("k000 resurrected: %v", err)
	}
	// With everything in one compaction, the last tombstone goes too.
	if err := db.Compact(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetEntry([]byte("k000")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("k000 after full compaction: %v", err)
	}
	if m := db.Metrics(); m.TombstonesPurged != 100 || m.Levels[6].NumFiles != 0 {
		t.Fatalf("after full compaction: purged %d, L6 files %d", m.TombstonesPurged, m.Levels[6].NumFiles)
	}
}

// TestWriteStallBounded fills memtables while flushes cannot finish and
// checks that writes stall, then fail with ErrWriteStall after
// MaxWriteStall, and that the stall is counted.
func TestWriteStallBounded(t *testing.T) {
	mem := vfs.NewMemFS()
	block := make(chan struct{})
	efs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
		if op == vfs.OpCreate && strings.HasSuffix(name, ".sst.tmp") {
			<-block // flushes hang until the test ends
		}
		return false
	}}
	opts := smallOptions(efs, Leveled, newManualClock())
	opts.MaxWriteStall = 200 * time.Millisecond
	opts.MemTableStopWritesThreshold = 2
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	defer close(block)
	val := make([]byte, 4<<10)
	var stallErr error
	for i := 0; i < 1000 && stallErr == nil; i++ {
		stallErr = db.Set([]byte(fmt.Sprintf("k%04d", i)), val, uint64(i+1), NoSync)
	}
	if !errors.Is(stallErr, ErrWriteStall) {
		t.Fatalf("writes never stalled: %v", stallErr)
	}
	m := db.Metrics()
	if m.WriteStalls == 0 || m.WriteStallFailures == 0 {
		t.Fatalf("stall not counted: %+v", m)
	}
	if m.MemTableSize > 3*opts.MemTableSize {
		t.Fatalf("memtables hold %d bytes, over the bound", m.MemTableSize)
	}
}

// TestCompactionRateChange checks that the compaction limiter follows
// SetCompactionRate while the DB runs.
func TestCompactionRateChange(t *testing.T) {
	db, _ := openMem(t, nil)
	defer db.Close()
	db.SetCompactionRate(1 << 20)
	if got := db.limiter.Limit(); got != 1<<20 {
		t.Fatalf("limit %v, want 1 MiB/s", got)
	}
	db.SetCompactionRate(0)
	if !isInf(float64(db.limiter.Limit())) {
		t.Fatalf("limit %v, want unlimited", db.limiter.Limit())
	}
}

func isInf(f float64) bool { return f > 1e300 }

// TestLockedDirectory checks that a second Open of a directory in use fails.
func TestLockedDirectory(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{Logger: discardLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db2, err := Open(dir, &Options{Logger: discardLogger}); err == nil {
		db2.Close()
		t.Fatal("a second Open of a locked directory succeeded")
	}
}

// TestMetricsAndEvents checks that the counters an operator graphs move.
func TestMetricsAndEvents(t *testing.T) {
	var created, deleted, flushes, compactions int
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	count := func(p *int) { <-mu; *p++; mu <- struct{}{} }
	fs := vfs.NewMemFS()
	opts := smallOptions(fs, Leveled, newManualClock())
	opts.EventListener = EventListener{
		TableCreated:  func(TableInfo) { count(&created) },
		TableDeleted:  func(TableInfo) { count(&deleted) },
		FlushEnd:      func(FlushInfo) { count(&flushes) },
		CompactionEnd: func(CompactionInfo) { count(&compactions) },
	}
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		if err := db.Set([]byte(fmt.Sprintf("k%05d", i*7919%3000)), bytes.Repeat([]byte{'v'}, 200), uint64(i+1), Sync); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3000; i++ {
		_, _, _ = db.Get([]byte(fmt.Sprintf("k%05d", i)))
		_, _, _ = db.Get([]byte(fmt.Sprintf("k%05d-absent", i)))
	}
	if err := db.Compact(); err != nil {
		t.Fatal(err)
	}
	m := db.Metrics()
	if m.Flushes == 0 || m.Compactions == 0 || m.WALSyncs == 0 || m.WALRecords < 3000 || m.WriteAmp <= 1 ||
		m.BloomChecks == 0 || m.BloomNegatives == 0 || m.BlockCacheHits+m.BlockCacheMisses == 0 || m.Levels[6].NumFiles == 0 {
		t.Fatalf("metrics did not move: %+v", m)
	}
	if fp := float64(m.BloomFalsePositives) / float64(m.BloomChecks); fp > 0.05 {
		t.Fatalf("bloom false positive rate %.3f", fp)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if created == 0 || deleted == 0 || flushes == 0 || compactions == 0 {
		t.Fatalf("events: created %d deleted %d flushes %d compactions %d", created, deleted, flushes, compactions)
	}
}

// TestCorruptTableReported flips a byte of a table and checks that reads
// report corruption naming the file, not a panic or a silent miss.
func TestCorruptTableReported(t *testing.T) {
	fs := vfs.NewMemFS()
	opts := smallOptions(fs, Leveled, newManualClock())
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if err := db.Set([]byte(fmt.Sprintf("k%03d", i)), bytes.Repeat([]byte{'v'}, 100), uint64(i+1), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Compact(); err != nil {
		t.Fatal(err)
	}
	tables := db.Tables()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("/db/%06d.sst", tables[0].FileNum)
	f, err := fs.OpenReadWrite(name)
	if err != nil {
		t.Fatal(err)
	}
	// OpenReadWrite writes from offset 0: rewrite the file with one bit
	// flipped in its first data block.
	whole := make([]byte, tables[0].Size)
	if _, err := f.ReadAt(whole, 0); err != nil {
		t.Fatal(err)
	}
	whole[100] ^= 0x40
	if _, err := f.Write(whole); err != nil {
		t.Fatal(err)
	}
	f.Close()
	db, err = Open("/db", smallOptions(fs, Leveled, newManualClock()))
	if err != nil {
		if !errors.Is(err, ErrCorruption) || !strings.Contains(err.Error(), fmt.Sprintf("%06d.sst", tables[0].FileNum)) {
			t.Fatalf("open error does not name the corrupt table: %v", err)
		}
		return
	}
	defer db.Close()
	var sawErr error
	for i := 0; i < 200 && sawErr == nil; i++ {
		_, _, err := db.Get([]byte(fmt.Sprintf("k%03d", i)))
		if err != nil && !errors.Is(err, ErrNotFound) {
			sawErr = err
		}
	}
	if !errors.Is(sawErr, ErrCorruption) || !strings.Contains(sawErr.Error(), fmt.Sprintf("%06d.sst", tables[0].FileNum)) {
		t.Fatalf("reads of a corrupt block: %v", sawErr)
	}
}

// TestFlushContextBounded: a flush that keeps failing (and is retried) does
// not hold FlushContext past its context, Close still returns, and the
// writes come back from the WAL at the next Open.
func TestFlushContextBounded(t *testing.T) {
	mem := vfs.NewMemFS()
	var failing atomic.Bool
	failing.Store(true)
	efs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
		return failing.Load() && op == vfs.OpCreate && strings.HasSuffix(name, ".sst.tmp")
	}}
	opts := smallOptions(efs, Leveled, newManualClock())
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("k"), []byte("v"), 1, Sync); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := db.FlushContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("FlushContext with failing flushes: %v, want context.DeadlineExceeded", err)
	}
	if efs.Injected.Load() == 0 {
		t.Fatal("no flush was attempted")
	}
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs while the flush keeps failing")
	}
	failing.Store(false)
	db, err = Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, _, err := db.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("after reopen: %q, %v; want the write replayed from the WAL", v, err)
	}
}
