package catalog

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
)

func entry(num uint64) Entry {
	return Entry{Type: objstorage.FileTypeTable, Num: num, Size: int64(1000 + num), CRC: uint32(num * 7), MetaOff: int64(500 + num)}
}

func TestReplayAndRewrite(t *testing.T) {
	fs := vfs.NewMemFS()
	_ = fs.MkdirAll("/d", 0o755)
	c, err := Open(fs, "/d/TIERCAT", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 5; i++ {
		if err := c.Add(entry(i)); err != nil {
			t.Fatal(err)
		}
	}
	blob := Entry{Type: objstorage.FileTypeBlob, Num: 3, Size: 10, CRC: 1, MetaOff: 0}
	if err := c.Add(blob); err != nil {
		t.Fatal(err)
	}
	if err := c.Drop(Key{objstorage.FileTypeTable, 2}); err != nil {
		t.Fatal(err)
	}
	want := c.Entries()
	c.Close()
	for round := 0; round < 2; round++ { // replay, then replay the rewritten snapshot
		c, err = Open(fs, "/d/TIERCAT", nil)
		if err != nil {
			t.Fatal(err)
		}
		got := c.Entries()
		if len(got) != 5 || len(got) != len(want) {
			t.Fatalf("round %d: %d entries, want %d", round, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("round %d: entry %d = %+v, want %+v", round, i, got[i], want[i])
			}
		}
		if _, ok := c.Get(Key{objstorage.FileTypeTable, 2}); ok {
			t.Fatal("dropped entry replayed")
		}
		c.Close()
	}
}

func TestTornTailAndCorruption(t *testing.T) {
	var log []byte
	for i := uint64(1); i <= 3; i++ {
		log = EncodeEdit(log, Edit{Entry: entry(i)})
	}
	full := len(log)
	count := func(b []byte) (int, bool, error) {
		n := 0
		_, torn, err := Replay(b, func(Edit) { n++ })
		return n, torn, err
	}
	// Every truncation of the last record is a torn tail.
	for cut := full - 1; cut > full-len(EncodeEdit(nil, Edit{Entry: entry(3)})); cut-- {
		n, torn, err := count(log[:cut])
		if err != nil || !torn || n != 2 {
			t.Fatalf("cut at %d: %d records, torn %v, err %v", cut, n, torn, err)
		}
	}
	// A flipped byte in the last record: torn tail.
	bad := append([]byte(nil), log...)
	bad[full-2] ^= 0xff
	if n, torn, err := count(bad); err != nil || !torn || n != 2 {
		t.Fatalf("bad last record: %d, %v, %v", n, torn, err)
	}
	// A flipped byte in the first record, with records after it: an error
	// naming the offset.
	bad = append([]byte(nil), log...)
	bad[10] ^= 0xff
	_, _, err := count(bad)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "offset 0") {
		t.Fatalf("mid-log corruption: %v", err)
	}
}

func FuzzReplay(f *testing.F) {
	var log []byte
	for i := uint64(1); i <= 3; i++ {
		log = EncodeEdit(log, Edit{Entry: entry(i), Drop: i == 2})
	}
	f.Add(log)
	f.Add(log[:len(log)-3])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var edits []Edit
		valid, _, err := Replay(b, func(e Edit) { edits = append(edits, e) })
		if valid < 0 || valid > int64(len(b)) {
			t.Fatalf("valid prefix %d of %d bytes", valid, len(b))
		}
		if err != nil {
			return
		}
		// What decoded re-encodes to the valid prefix.
		var re []byte
		for _, e := range edits {
			re = EncodeEdit(re, e)
		}
		if string(re) != string(b[:valid]) {
			t.Fatalf("re-encoding differs from the valid prefix")
		}
	})
}

// TestCompaction: edits rewrite the log once it outgrows its snapshot, so
// its size stays bounded by the live entries; every rewrite, and a crash at
// any point (with torn unsynced tails), keeps every synced edit.
func TestCompaction(t *testing.T) {
	fs := vfs.NewMemFS()
	_ = fs.MkdirAll("/d", 0o755)
	c, err := Open(fs, "/d/TIERCAT", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close() }()
	c.compactMinGrowth = 2 << 10
	recSize := int64(len(EncodeEdit(nil, Edit{Entry: entry(1000)})))
	model := map[Key]Entry{}
	rng := rand.New(rand.NewPCG(1, 2))
	var maxSize int64
	for i := uint64(1); i <= 5000; i++ {
		// About 40 live entries: each add is dropped 40 adds later.
		e := entry(i)
		if err := c.Add(e); err != nil {
			t.Fatal(err)
		}
		model[e.Key()] = e
		if i > 40 {
			k := entry(i - 40).Key()
			if err := c.Drop(k); err != nil {
				t.Fatal(err)
			}
			delete(model, k)
		}
		st, err := fs.Stat("/d/TIERCAT")
		if err != nil {
			t.Fatal(err)
		}
		maxSize = max(maxSize, st.Size())
		if i%997 == 0 {
			// A crash now: the clone replays exactly the model.
			crashed := fs.CrashClone(rng)
			cc, err := Open(crashed, "/d/TIERCAT", nil)
			if err != nil {
				t.Fatalf("after %d adds, crash: %v", i, err)
			}
			checkEntries(t, cc, model)
			cc.Close()
		}
	}
	c.mu.Lock()
	rewrites := c.mu.rewrites
	c.mu.Unlock()
	// 10,000 edits would be 10,000 records; the live set is 40 records.
	if bound := 2*40*recSize + c.compactMinGrowth + 2*recSize; maxSize > bound || rewrites < 10 {
		t.Fatalf("log reached %d bytes (bound %d) with %d rewrites", maxSize, bound, rewrites)
	}
	checkEntries(t, c, model)
	c.Close()
	if c, err = Open(fs, "/d/TIERCAT", nil); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, c, model)
}

// TestCompactionFailure: a rewrite that fails before its rename leaves the
// log as it was and the catalog usable; one whose directory sync fails
// makes the catalog refuse edits.
func TestCompactionFailure(t *testing.T) {
	mem := vfs.NewMemFS()
	_ = mem.MkdirAll("/d", 0o755)
	var failRename, failSync atomic.Bool
	fs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
		return (op == vfs.OpRename && failRename.Load()) || (op == vfs.OpSync && failSync.Load() && name == "/d")
	}}
	c, err := Open(fs, "/d/TIERCAT", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close() }()
	c.compactMinGrowth = 1 << 10
	model := map[Key]Entry{}
	failRename.Store(true)
	for i := uint64(1); i <= 200; i++ {
		e := entry(i)
		if err := c.Add(e); err != nil {
			t.Fatalf("add %d with failing compactions: %v", i, err)
		}
		model[e.Key()] = e
	}
	if fs.Injected.Load() == 0 {
		t.Fatal("no compaction was attempted")
	}
	failRename.Store(false)
	c.Close()
	if c, err = Open(mem, "/d/TIERCAT", nil); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, c, model)
	c.Close()

	if c, err = Open(fs, "/d/TIERCAT", nil); err != nil {
		t.Fatal(err)
	}
	c.compactMinGrowth = 1 << 10
	failSync.Store(true)
	var addErr error
	for i := uint64(1000); i < 2000 && addErr == nil; i++ {
		addErr = c.Add(entry(i))
		if addErr == nil {
			model[entry(i).Key()] = entry(i)
		}
	}
	if addErr == nil {
		t.Fatal("edits accepted after a failed directory sync")
	}
	failSync.Store(false)
	c.Close()
	// The edit whose compaction failed is durable (in either file); the
	// crash image holds what was synced.
	cc, err := Open(mem.CrashClone(nil), "/d/TIERCAT", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	checkEntries(t, cc, model)
}

func checkEntries(t *testing.T, c *Catalog, want map[Key]Entry) {
	t.Helper()
	got := c.Entries()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for _, e := range got {
		if want[e.Key()] != e {
			t.Fatalf("entry %+v, want %+v", e, want[e.Key()])
		}
	}
}
