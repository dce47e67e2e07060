package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tierkv/tierkv/lsm/vfs"
)

func blobFilesOnDisk(t *testing.T, fs vfs.FS) int {
	t.Helper()
	names, err := fs.List("/db")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range names {
		if strings.HasSuffix(name, ".blob") {
			n++
		}
	}
	return n
}

// TestBlobGarbageCollected overwrites keys whose values live in blob files
// and checks that compaction deletes blob files nothing references, copies
// the live values out of files that are mostly garbage, and leaves no
// orphan file behind; values read back intact throughout.
func TestBlobGarbageCollected(t *testing.T) {
	fs := vfs.NewMemFS()
	opts := smallOptions(fs, Leveled, newManualClock())
	opts.DisableAutomaticCompactions = true
	opts.MemTableSize = 1 << 20 // one flush per round
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	val := func(k, round int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("%04d-%02d|", k, round)), 100)
	}
	want := map[int]int{}
	write := func(round, every int) {
		for k := 0; k < 100; k += every {
			if err := db.Set([]byte(fmt.Sprintf("k%04d", k)), val(k, round), uint64(round*1000+k+1), NoSync); err != nil {
				t.Fatal(err)
			}
			want[k] = round
		}
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	check := func() {
		t.Helper()
		for k, r := range want {
			v, _, err := db.Get([]byte(fmt.Sprintf("k%04d", k)))
			if err != nil || !bytes.Equal(v, val(k, r)) {
				t.Fatalf("k%04d: %v", k, err)
			}
		}
	}
	write(1, 1) // blob file A: all 100 values
	write(2, 1) // blob file B: all 100 values; A is now all garbage
	if m := db.Metrics(); m.BlobFiles != 2 {
		t.Fatalf("%d blob files after two flushes, want 2", m.BlobFiles)
	}
	check()
	if err := db.Compact(); err != nil {
		t.Fatal(err)
	}
	m := db.Metrics()
	if m.BlobFiles != 1 || blobFilesOnDisk(t, fs) != 1 {
		t.Fatalf("after compaction: %d blob files in the version, %d on disk; want 1", m.BlobFiles, blobFilesOnDisk(t, fs))
	}
	if m.BlobLiveBytes != 100*uint64(len(val(0, 2))) {
		t.Fatalf("live blob bytes %d", m.BlobLiveBytes)
	}
	check()

	// Overwrite 3 in 4 keys: B becomes 75% garbage, past the 50% ratio,
	// so a full compaction copies its live quarter and B goes.
	for k := 0; k < 100; k++ {
		if k%4 != 0 {
			if err := db.Set([]byte(fmt.Sprintf("k%04d", k)), val(k, 3), uint64(3000+k), NoSync); err != nil {
				t.Fatal(err)
			}
			want[k] = 3
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	check()
	before := db.BlobFiles()
	rewritten := db.Metrics().BlobRewriteBytes
	if err := db.Compact(); err != nil {
		t.Fatal(err)
	}
	check()
	m = db.Metrics()
	// The live quarter of B (25 values) was copied.
	if got, want := m.BlobRewriteBytes-rewritten, 25*uint64(len(val(0, 2))); got < want {
		t.Fatalf("BlobRewriteBytes grew by %d, want at least %d", got, want)
	}
	if m.BlobFiles != blobFilesOnDisk(t, fs) {
		t.Fatalf("%d blob files in the version, %d on disk", m.BlobFiles, blobFilesOnDisk(t, fs))
	}
	if float64(m.BlobLiveBytes) < 0.5*float64(m.BlobBytes) {
		t.Fatalf("after full compaction %d of %d blob bytes are live: garbage not reclaimed", m.BlobLiveBytes, m.BlobBytes)
	}
	for _, b := range db.BlobFiles() {
		if b.FileNum == before[0].FileNum {
			t.Fatalf("blob file %d, 75%% garbage, survived a full compaction", b.FileNum)
		}
	}
	// Reopen: the blob files are found again and nothing is orphaned.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open("/db", smallOptions(fs, Leveled, newManualClock())); err != nil {
		t.Fatal(err)
	}
	check()
	if got := len(db.BlobFiles()); got != blobFilesOnDisk(t, fs) {
		t.Fatalf("%d blob files after reopen, %d on disk", got, blobFilesOnDisk(t, fs))
	}
}

// TestGetVersionReadsNoValue checks that GetVersion answers from the
// memtable and from tables without reading a separated value: with every
// read of a value file failing, Get fails and GetVersion still returns the
// newest version and tombstone flag.
func TestGetVersionReadsNoValue(t *testing.T) {
	mem := vfs.NewMemFS()
	var failValues atomic.Bool
	efs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
		return failValues.Load() && op == vfs.OpRead && !strings.HasSuffix(name, ".sst")
	}}
	opts := smallOptions(efs, Leveled, newManualClock())
	opts.DisableAutomaticCompactions = true
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	big := bytes.Repeat([]byte("v"), 4<<10) // above the separation threshold
	mustSet := func(k string, v []byte, ver uint64) {
		t.Helper()
		if err := db.Set([]byte(k), v, ver, NoSync); err != nil {
			t.Fatal(err)
		}
	}
	mustSet("flushed", big, 10)
	mustSet("gone", big, 11)
	if err := db.Delete([]byte("gone"), 12, NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	mustSet("fresh", big, 13) // in the memtable
	failValues.Store(true)
	if _, _, err := db.Get([]byte("flushed")); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("Get of a flushed separated value: %v, want the injected read error (the test would prove nothing)", err)
	}
	for _, c := range []struct {
		key     string
		version uint64
		deleted bool
	}{{"flushed", 10, false}, {"gone", 12, true}, {"fresh", 13, false}} {
		v, del, err := db.GetVersion([]byte(c.key))
		if err != nil || v != c.version || del != c.deleted {
			t.Errorf("GetVersion(%q) = %d, %v, %v; want %d, %v", c.key, v, del, err, c.version, c.deleted)
		}
	}
	if _, _, err := db.GetVersion([]byte("absent")); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetVersion(absent): %v, want ErrNotFound", err)
	}
}
