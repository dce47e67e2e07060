package tiering

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
)

// TestGCDelaySurvivesRestart: the time GC first saw an object unreferenced
// survives a restart (a node restarting more often than GCDelay still
// collects its garbage, and never earlier than GCDelay); an unreadable
// state file restarts the delays.
func TestGCDelaySurvivesRestart(t *testing.T) {
	fs := vfs.NewMemFS()
	clock := newManualClock()
	mem := objectstore.NewMemBucket()
	opts := testOptions(fs, "/db", mem, nil, allCold(lsm.Leveled), clock)
	opts.BackupRetention = 1
	td := openTiered(t, opts, func(p objstorage.Provider) *lsm.Options {
		o := smallDBOptions(fs, lsm.Leveled, clock, p)
		o.DisableAutomaticCompactions = true
		return o
	})
	ctx := context.Background()
	garbage := func() []string {
		t.Helper()
		writeKeys(t, td.db, 0, 2000)
		if err := td.m.Upload(ctx); err != nil {
			t.Fatal(err)
		}
		if err := td.m.Backup(ctx); err != nil {
			t.Fatal(err)
		}
		old := bucketObjects(t, mem)
		if err := td.db.Compact(); err != nil { // replaces every table
			t.Fatal(err)
		}
		if err := td.m.Upload(ctx); err != nil {
			t.Fatal(err)
		}
		if err := td.m.Backup(ctx); err != nil { // the only retained backup
			t.Fatal(err)
		}
		live := catalogObjects(td.m)
		var out []string
		for _, n := range old {
			if !slices.Contains(live, n) {
				out = append(out, n)
			}
		}
		if len(out) == 0 {
			t.Fatal("no garbage")
		}
		return out
	}
	exists := func(names []string) int {
		n := 0
		for _, name := range names {
			if _, err := mem.Attributes(ctx, name); err == nil {
				n++
			} else if !errors.Is(err, objectstore.ErrNotExist) {
				t.Fatal(err)
			}
		}
		return n
	}
	gc := func() {
		t.Helper()
		if err := td.m.GC(ctx); err != nil {
			t.Fatal(err)
		}
	}

	g := garbage()
	gc() // first sight
	clock.Advance(40 * time.Minute)
	td.reopen()
	gc()
	clock.Advance(15 * time.Minute) // 55 min since the first sight
	td.reopen()
	gc()
	if n := exists(g); n != len(g) {
		t.Fatalf("%d of %d garbage objects deleted before GCDelay", len(g)-n, len(g))
	}
	clock.Advance(6 * time.Minute)
	td.reopen()
	gc()
	if n := exists(g); n != 0 {
		t.Fatalf("%d of %d garbage objects left after GCDelay across restarts", n, len(g))
	}
	checkBackupsComplete(t, mem, "node1")

	// A corrupt state file is ignored: the delays start again.
	g = garbage()
	gc()
	if err := vfs.WriteFileAtomic(fs, "/db/"+gcStateName, []byte("TKgc garbage")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	td.reopen()
	gc() // first sight again
	if n := exists(g); n != len(g) {
		t.Fatalf("%d garbage objects deleted right after an unreadable state", len(g)-n)
	}
	clock.Advance(time.Hour)
	gc()
	if n := exists(g); n != 0 {
		t.Fatalf("%d garbage objects left", n)
	}
}

func TestGCStateEncoding(t *testing.T) {
	since := map[string]time.Time{
		"node1/tables/000001.sst":              time.UnixMilli(1_700_000_000_123),
		"node1/manifests/00000000000000000002": time.UnixMilli(5),
	}
	data := encodeGCState(since)
	got, err := decodeGCState(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, since) {
		t.Fatalf("decoded %v, want %v", got, since)
	}
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x40
		if _, err := decodeGCState(bad); !errors.Is(err, errBadGCState) {
			t.Fatalf("flipped byte %d: %v", i, err)
		}
	}
	if got, err := decodeGCState(encodeGCState(nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty state: %v, %v", got, err)
	}
}

func FuzzDecodeGCState(f *testing.F) {
	f.Add(encodeGCState(map[string]time.Time{"a/b": time.UnixMilli(7)}))
	f.Add([]byte("TKgc"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeGCState(data)
		if err != nil {
			return
		}
		if string(encodeGCState(got)) != string(data) {
			t.Fatal("decoded GC state re-encodes differently")
		}
	})
}
