package vfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// rangeFile is a File that records SyncRange calls.
type rangeFile struct {
	File
	written int64
	ranges  [][2]int64
	// maxDirty is the most bytes written and not yet range-synced seen
	// just before a write.
	maxDirty int64
}

func (f *rangeFile) Write(p []byte) (int, error) {
	f.maxDirty = max(f.maxDirty, f.written-f.syncedEnd())
	n, err := f.File.Write(p)
	f.written += int64(n)
	return n, err
}

func (f *rangeFile) SyncRange(off, n int64) error {
	f.ranges = append(f.ranges, [2]int64{off, n})
	return nil
}

func (f *rangeFile) syncedEnd() int64 {
	if len(f.ranges) == 0 {
		return 0
	}
	r := f.ranges[len(f.ranges)-1]
	return r[0] + r[1]
}

// TestPacedWriter checks that a paced writer passes every byte through and
// writes the file back in order, chunk after chunk, so that no more than
// two chunks (plus the write in hand) are ever dirty.
func TestPacedWriter(t *testing.T) {
	fs := NewMemFS()
	mf, err := fs.Create("f")
	if err != nil {
		t.Fatal(err)
	}
	f := &rangeFile{File: mf}
	const every = 1000
	w := NewPacedWriter(f, every)
	var want []byte
	for i := range 300 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i*7%333)
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p...)
	}
	got := make([]byte, len(want))
	if _, err := mf.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("file contents differ from what was written (err %v)", err)
	}
	if len(f.ranges) == 0 {
		t.Fatal("no SyncRange calls")
	}
	for i, r := range f.ranges {
		if r[0] != int64(i)*every || r[1] != every {
			t.Fatalf("range %d is [%d, +%d), want [%d, +%d)", i, r[0], r[1], i*every, every)
		}
	}
	if end := f.syncedEnd(); end < int64(len(want))-2*every {
		t.Fatalf("written back up to %d of %d bytes: more than two chunks left dirty", end, len(want))
	}
	if f.maxDirty >= 2*every+333 {
		t.Fatalf("%d bytes were dirty at once, want under two chunks plus one write", f.maxDirty)
	}
}

// TestPacedWriterPassThrough: without range syncs or pacing the file itself
// is returned.
func TestPacedWriterPassThrough(t *testing.T) {
	fs := NewMemFS()
	mf, _ := fs.Create("f")
	if w := NewPacedWriter(mf, 1<<20); w != mf {
		t.Fatalf("a MemFS file (no SyncRange) got wrapped: %T", w)
	}
	rf := &rangeFile{File: mf}
	if w := NewPacedWriter(rf, 0); w != rf {
		t.Fatalf("bytesPerSync 0 wrapped the file: %T", w)
	}
}

// TestOSFileSyncRange runs the real sync_file_range on a file.
func TestOSFileSyncRange(t *testing.T) {
	f, err := Default.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rs, ok := f.(RangeSyncer)
	if !ok {
		t.Fatalf("%T is not a RangeSyncer", f)
	}
	w := NewPacedWriter(f, 4096)
	buf := bytes.Repeat([]byte("x"), 3000)
	for range 10 {
		if _, err := w.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := rs.SyncRange(0, 30000); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(f.(osFile).Name())
	if err != nil || st.Size() != 30000 {
		t.Fatalf("size %v, err %v", st.Size(), err)
	}
}
