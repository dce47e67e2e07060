package manifest

import (
	"errors"
	"reflect"
	"testing"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

func sampleEdit() *VersionEdit {
	return &VersionEdit{
		LogNum:      7,
		NextFileNum: 42,
		Deleted:     []DeletedTable{{Level: 0, FileNum: 3}, {Level: 1, FileNum: 5}},
		Added: []NewTable{
			{Level: 1, Meta: &TableMeta{FileNum: 9, Size: 1234, Smallest: []byte("a"), Largest: []byte("m"),
				MinVersion: 1, MaxVersion: 99, NumEntries: 10, NumTombstones: 2, CreatedUnixMilli: 1700000000000,
				BlobRefs: []BlobRef{{FileNum: 8, ValueBytes: 1 << 20}}}},
			{Level: 6, Meta: &TableMeta{FileNum: 10, Size: 1, Smallest: []byte(""), Largest: []byte("z")}},
		},
		AddedBlobs: []*BlobMeta{{FileNum: 8, Size: 2 << 20, NumValues: 100, ValueBytes: 2 << 20, CreatedUnixMilli: 5},
			{FileNum: 11, Size: 64 << 20, ValueBytes: 64 << 20, Segment: true}},
		DeletedBlobs: []base.FileNum{4},
	}
}

func TestEditRoundTrip(t *testing.T) {
	e := sampleEdit()
	got, err := Decode(e.Encode(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normalize(got), normalize(e)) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
	}
}

func normalize(e *VersionEdit) *VersionEdit {
	for _, a := range e.Added {
		if len(a.Meta.Smallest) == 0 {
			a.Meta.Smallest = nil
		}
	}
	return e
}

// TestEditTruncated checks that every strict prefix of an encoding that
// cuts a field is rejected as corruption rather than accepted silently.
func TestEditTruncated(t *testing.T) {
	enc := sampleEdit().Encode(nil)
	for i := 1; i < len(enc); i++ {
		_, err := Decode(enc[:i])
		if err != nil && !errors.Is(err, base.ErrCorruption) {
			t.Fatalf("prefix %d: error %v does not wrap ErrCorruption", i, err)
		}
	}
	if _, err := Decode([]byte{2}); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("unknown format version: got %v", err)
	}
	if _, err := Decode([]byte{1, 99}); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("unknown tag: got %v", err)
	}
}

func TestVersionBlobs(t *testing.T) {
	v, err := (&Version{}).Apply(&VersionEdit{
		AddedBlobs: []*BlobMeta{{FileNum: 3, ValueBytes: 100}, {FileNum: 2, ValueBytes: 50}},
		Added: []NewTable{{Level: 0, Meta: &TableMeta{FileNum: 5, Smallest: []byte("a"), Largest: []byte("b"),
			BlobRefs: []BlobRef{{FileNum: 3, ValueBytes: 40}}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if v.Blobs[0].FileNum != 2 {
		t.Fatal("blobs not ordered")
	}
	if got := v.UnreferencedBlobs(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("UnreferencedBlobs = %v, want [2]", got)
	}
	if live := v.BlobLiveBytes(); live[3] != 40 {
		t.Fatalf("live bytes %v", live)
	}
	if _, err := v.Apply(&VersionEdit{DeletedBlobs: []base.FileNum{9}}); err == nil {
		t.Fatal("deleting an absent blob succeeded")
	}
}

func TestVersionApply(t *testing.T) {
	v := &Version{}
	v1, err := v.Apply(&VersionEdit{Added: []NewTable{
		{Level: 1, Meta: &TableMeta{FileNum: 2, Smallest: []byte("m"), Largest: []byte("p")}},
		{Level: 1, Meta: &TableMeta{FileNum: 1, Smallest: []byte("a"), Largest: []byte("c")}},
		{Level: 0, Meta: &TableMeta{FileNum: 5, Smallest: []byte("a"), Largest: []byte("z")}},
		{Level: 0, Meta: &TableMeta{FileNum: 4, Smallest: []byte("a"), Largest: []byte("z")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if v1.Levels[1][0].FileNum != 1 || v1.Levels[0][0].FileNum != 4 {
		t.Fatalf("levels not ordered: %+v", v1.Levels)
	}
	if err := v1.CheckOrdering(); err != nil {
		t.Fatal(err)
	}
	if got := v1.Overlaps(1, []byte("b"), []byte("n")); len(got) != 2 {
		t.Fatalf("Overlaps = %d tables, want 2", len(got))
	}
	if _, err := v1.Apply(&VersionEdit{Deleted: []DeletedTable{{Level: 2, FileNum: 1}}}); err == nil {
		t.Fatal("deleting an absent table succeeded")
	}
	if _, err := v1.Apply(&VersionEdit{Added: []NewTable{{Level: 3, Meta: &TableMeta{FileNum: 5}}}}); err == nil {
		t.Fatal("adding a table twice succeeded")
	}
	v2, err := v1.Apply(&VersionEdit{Deleted: []DeletedTable{{Level: 0, FileNum: 4}}})
	if err != nil || len(v2.Levels[0]) != 1 || len(v1.Levels[0]) != 2 {
		t.Fatalf("Apply changed its receiver or failed: %v", err)
	}
}

func FuzzDecodeEdit(f *testing.F) {
	f.Add(sampleEdit().Encode(nil))
	f.Add((&VersionEdit{}).Encode(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatalf("error %v does not wrap ErrCorruption", err)
			}
			return
		}
		// A decoded edit re-encodes to something that decodes the same.
		e2, err := Decode(e.Encode(nil))
		if err != nil || !reflect.DeepEqual(normalize(e2), normalize(e)) {
			t.Fatalf("re-decode mismatch: %v", err)
		}
	})
}
