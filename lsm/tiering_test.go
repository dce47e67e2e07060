package lsm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// TestManifestSnapshotRoundTrip: a DB created from a manifest snapshot,
// whose objects a provider serves from the original directory, reads like
// the original; the snapshot lists exactly the live objects; the metadata
// offset of every table is where the reader's metadata reads start.
func TestManifestSnapshotRoundTrip(t *testing.T) {
	fs := vfs.NewMemFS()
	clock := newManualClock()
	opts := smallOptions(fs, Leveled, clock)
	// NB: a background compaction could delete a snapshotted table before
	// the checks below open it; backups tolerate that (they retry), this
	// test reads the tables directly.
	opts.DisableAutomaticCompactions = true
	db, err := Open("/a", opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		v := fmt.Sprintf("value-%d-%0*d", i, i%400, 0)
		if err := db.Set([]byte(fmt.Sprintf("k%05d", i)), []byte(v), uint64(i+1), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	snap, err := db.ManifestSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var tables, blobs []uint64
	for _, ti := range db.Tables() {
		tables = append(tables, ti.FileNum)
	}
	for _, b := range db.BlobFiles() {
		blobs = append(blobs, b.FileNum)
	}
	slices.Sort(tables)
	slices.Sort(blobs)
	st, sb := slices.Sorted(slices.Values(snap.Tables)), slices.Sorted(slices.Values(snap.Blobs))
	if !slices.Equal(st, tables) || !slices.Equal(sb, blobs) || len(blobs) == 0 {
		t.Fatalf("snapshot lists tables %v blobs %v; live %v %v", st, sb, tables, blobs)
	}
	parsed, err := ParseManifestSnapshot(snap.Data)
	if err != nil || !slices.Equal(parsed.Tables, snap.Tables) {
		t.Fatalf("parse: %v", err)
	}
	if _, err := ParseManifestSnapshot([]byte{1, 99, 3}); !errors.Is(err, ErrCorruption) {
		t.Fatalf("parse of garbage: %v", err)
	}
	want := map[string]string{}
	for i := 0; i < 3000; i += 7 {
		k := fmt.Sprintf("k%05d", i)
		v, _, err := db.Get([]byte(k))
		if err != nil {
			t.Fatal(err)
		}
		want[k] = string(v)
	}
	p := objstorage.NewLocal(fs, "/a")
	for _, n := range snap.Tables {
		r, err := p.Open(context.Background(), objstorage.FileTypeTable, n)
		if err != nil {
			t.Fatal(err)
		}
		off, err := ObjectMetaOffset(context.Background(), objstorage.FileTypeTable, n, r)
		if err != nil || off <= 0 || off >= r.Size() {
			t.Fatalf("meta offset of table %d: %d, %v (size %d)", n, off, err, r.Size())
		}
		r.Close()
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	if err := WriteManifestSnapshot(fs, "/b", snap.Data, snap.NextFileNum+100); err != nil {
		t.Fatal(err)
	}
	if err := WriteManifestSnapshot(fs, "/b", snap.Data, 0); err == nil {
		t.Fatal("WriteManifestSnapshot over a DB succeeded")
	}
	o := smallOptions(fs, Leveled, clock)
	o.Provider = readOnlyProvider{p}
	o.DisableAutomaticCompactions = true
	db2, err := Open("/b", o)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	for k, v := range want {
		got, _, err := db2.Get([]byte(k))
		if err != nil || string(got) != v {
			t.Fatalf("restored Get(%s) = %q, %v", k, got, err)
		}
	}
	db2.mu.Lock()
	next := db2.mu.nextFileNum
	db2.mu.Unlock()
	if uint64(next) < snap.NextFileNum+100 {
		t.Fatalf("next file number %d, want at least %d", next, snap.NextFileNum+100)
	}
}

// readOnlyProvider serves another directory's objects and creates new ones
// there too; Remove is refused so the test sees the original untouched.
type readOnlyProvider struct{ objstorage.Provider }

func (readOnlyProvider) Remove(objstorage.FileType, uint64) error { return nil }
