package catalog

import (
	"errors"
	"strings"
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
