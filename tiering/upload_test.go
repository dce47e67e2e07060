package tiering

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/faulty"
)

// checkBackupsComplete checks invariant 5: every object that any manifest
// backup in b references exists, with the size and CRC32C the backup
// recorded. It returns the number of backups.
func checkBackupsComplete(t *testing.T, b objectstore.Bucket, node string) int {
	t.Helper()
	ctx := context.Background()
	seqs, err := listBackups(ctx, b, node)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range seqs {
		data, err := objectstore.ReadAll(ctx, b, backupName(node, s))
		if err != nil {
			t.Fatal(err)
		}
		bk, err := decodeBackup(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range bk.entries {
			name := objectName(node, e.Type, e.Num)
			a, err := b.Attributes(ctx, name)
			if err != nil {
				t.Fatalf("manifest backup %d references %s: %v", s, name, err)
			}
			if a.Size != e.Size || (a.HasCRC32C && a.CRC32C != e.CRC) {
				t.Fatalf("manifest backup %d references %s of %d bytes crc %#x; stored %d bytes crc %#x", s, name, e.Size, e.CRC, a.Size, a.CRC32C)
			}
		}
	}
	return len(seqs)
}

// bucketObjects lists node's table and blob objects.
func bucketObjects(t *testing.T, b objectstore.Bucket) []string {
	t.Helper()
	var names []string
	for _, p := range []string{"node1/tables/", "node1/blobs/"} {
		if err := objectstore.Iter(context.Background(), b, p, func(n string) error {
			names = append(names, n)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

func catalogObjects(m *Manager) []string {
	var names []string
	for _, e := range m.cat.Entries() {
		names = append(names, m.objectName(e.Type, e.Num))
	}
	slices.Sort(names)
	return names
}

func writeKeys(t *testing.T, db *lsm.DB, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := db.Set([]byte(fmt.Sprintf("key-%06d", 2*i)), value(i), uint64(i+1), lsm.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestUploadResumesAfterOutage: uploads failing part-way leave no backup
// referencing a missing object; once the store is back, the next pass
// uploads the rest, and bucket and catalog hold each object exactly once.
func TestUploadResumesAfterOutage(t *testing.T) {
	fs := vfs.NewMemFS()
	clock := newManualClock()
	fb := faulty.New(objectstore.NewMemBucket(), faulty.Options{Sleep: noSleep})
	td := openTiered(t, testOptions(fs, "/db", fb, nil, allCold(lsm.Leveled), clock), func(p objstorage.Provider) *lsm.Options {
		o := smallDBOptions(fs, lsm.Leveled, clock, p)
		o.DisableAutomaticCompactions = true // no new local tables behind the passes' backs
		return o
	})
	ctx := context.Background()
	writeKeys(t, td.db, 0, 1000)
	if err := td.m.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	writeKeys(t, td.db, 1000, 3000)
	// The store fails every other upload.
	var n int
	remove := fb.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpPut}, Err: faulty.ErrInjected, Match: func(string) bool {
		n++
		return n%2 == 0
	}})
	if err := td.m.Upload(ctx); err == nil {
		t.Fatal("upload pass with failing puts succeeded")
	}
	if m := td.m.Metrics(); m.UploadFailures == 0 || m.UploadsPending == 0 {
		t.Fatalf("failures %d, pending %d", m.UploadFailures, m.UploadsPending)
	}
	writeKeys(t, td.db, 4000, 500)
	if err := td.m.Backup(ctx); err == nil {
		t.Fatal("backup with failing puts succeeded")
	}
	if got := checkBackupsComplete(t, fb, "node1"); got != 1 {
		t.Fatalf("%d backups, want only the first", got)
	}
	remove()
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := td.m.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := checkBackupsComplete(t, fb, "node1"); got != 2 {
		t.Fatalf("%d backups, want 2", got)
	}
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	if m := td.m.Metrics(); m.UploadsPending != 0 || m.LocalObjects != 0 {
		t.Fatalf("after the outage: %d pending, %d local objects", m.UploadsPending, m.LocalObjects)
	}
	// No object lost: every live object is in the catalog and the bucket.
	inBucket := bucketObjects(t, fb)
	for _, name := range catalogObjects(td.m) {
		if !slices.Contains(inBucket, name) {
			t.Fatalf("catalog entry %s has no object", name)
		}
	}
	td.reopen()
	for i := 0; i < 4500; i += 13 {
		v, _, err := td.db.Get([]byte(fmt.Sprintf("key-%06d", 2*i)))
		if err != nil || string(v) != string(value(i)) {
			t.Fatalf("Get(key %d) = %q, %v", i, v, err)
		}
	}
}

// TestCrashResume: a crash after the upload but before the catalog record
// re-uploads idempotently; a crash after the record but before the local
// deletion deletes without uploading again.
func TestCrashResume(t *testing.T) {
	fs := vfs.NewMemFS()
	clock := newManualClock()
	fb := faulty.New(objectstore.NewMemBucket(), faulty.Options{Sleep: noSleep})
	td := openTiered(t, testOptions(fs, "/db", fb, nil, allCold(lsm.Leveled), clock), func(p objstorage.Provider) *lsm.Options {
		o := smallDBOptions(fs, lsm.Leveled, clock, p)
		o.DisableAutomaticCompactions = true // no new local tables behind the passes' backs
		return o
	})
	ctx := context.Background()
	writeKeys(t, td.db, 0, 2000)

	// 1. Verification fails (as if the process died after the PUT).
	remove := fb.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpAttributes}, Err: faulty.ErrInjected})
	if err := td.m.Upload(ctx); err == nil {
		t.Fatal("upload with failing verification succeeded")
	}
	remove()
	if len(td.m.cat.Entries()) != 0 {
		t.Fatal("unverified objects entered the catalog")
	}
	if m := td.m.Metrics(); m.LocalObjects == 0 {
		t.Fatal("local copies deleted before verification")
	}
	td.reopen()
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	if m := td.m.Metrics(); m.LocalObjects != 0 || m.ObjectsUploaded == 0 {
		t.Fatalf("after resume: %d local, %d uploaded", m.LocalObjects, m.ObjectsUploaded)
	}

	// 2. Crash between the catalog record and the local deletion.
	writeKeys(t, td.db, 2000, 2000)
	crash := errors.New("crash")
	td.m.beforeLocalRemoveForTesting = func(Key) error { return crash }
	if err := td.m.Upload(ctx); !errors.Is(err, crash) {
		t.Fatalf("upload: %v, want the injected crash", err)
	}
	td.reopen()
	if m := td.m.Metrics(); m.LocalObjects == 0 {
		t.Fatal("no local copies left by the crash")
	}
	fb.ResetCalls()
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	if m := td.m.Metrics(); m.LocalObjects != 0 || m.ObjectsUploaded != 0 || fb.Calls(faulty.OpPut) != 0 {
		t.Fatalf("after resume: %d local, %d uploaded again, %d puts", m.LocalObjects, m.ObjectsUploaded, fb.Calls(faulty.OpPut))
	}
	for i := 0; i < 4000; i += 11 {
		v, _, err := td.db.Get([]byte(fmt.Sprintf("key-%06d", 2*i)))
		if err != nil || string(v) != string(value(i)) {
			t.Fatalf("Get(key %d) = %q, %v", i, v, err)
		}
	}
}

// TestGC: objects dropped by compactions are deleted only once no retained
// backup references them and GCDelay has passed; the latest backup still
// restores.
func TestGC(t *testing.T) {
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
	writeKeys(t, td.db, 0, 3000)
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := td.m.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	first := bucketObjects(t, mem)
	if err := td.db.Compact(); err != nil { // replaces every table
		t.Fatal(err)
	}
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := td.m.GC(ctx); err != nil {
		t.Fatal(err)
	}
	// Still referenced by backup 1.
	for _, n := range first {
		if _, err := mem.Attributes(ctx, n); err != nil {
			t.Fatalf("%s deleted while backup 1 references it: %v", n, err)
		}
	}
	if err := td.m.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := td.m.GC(ctx); err != nil { // first sight: unreferenced since now
		t.Fatal(err)
	}
	clock.Advance(59 * time.Minute)
	if err := td.m.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if td.m.Metrics().GCDeleted != 0 {
		t.Fatal("GC deleted before GCDelay")
	}
	clock.Advance(2 * time.Minute)
	if err := td.m.GC(ctx); err != nil {
		t.Fatal(err)
	}
	live := catalogObjects(td.m)
	var deleted int
	for _, n := range first {
		_, err := mem.Attributes(ctx, n)
		switch {
		case slices.Contains(live, n) && err != nil:
			t.Fatalf("live object %s deleted: %v", n, err)
		case !slices.Contains(live, n) && !errors.Is(err, objectstore.ErrNotExist):
			t.Fatalf("garbage object %s not deleted: %v", n, err)
		case !slices.Contains(live, n):
			deleted++
		}
	}
	seqs, _ := listBackups(ctx, mem, "node1")
	if deleted == 0 || len(seqs) != 1 {
		t.Fatalf("deleted %d objects; %d backups left, want 1", deleted, len(seqs))
	}
	checkBackupsComplete(t, mem, "node1")
	if _, err := Restore(ctx, RestoreOptions{FS: vfs.NewMemFS(), Dir: "/r", NodeID: "node1", Bucket: mem}); err != nil {
		t.Fatal(err)
	}
}

// TestMinIOKilledDuringUploads: MinIO dies in the middle of an upload
// pass; no manifest backup ever references a missing object, and uploads
// resume once MinIO is back.
func TestMinIOKilledDuringUploads(t *testing.T) {
	b, srv := killableMinioBucket(t)
	fs := vfs.NewMemFS()
	clock := newManualClock()
	opts := testOptions(fs, "/db", b, nil, allCold(lsm.Leveled), clock)
	opts.UploadRate = 1 << 20 // slow enough to die in the middle
	opts.UploadConcurrency = 2
	td := openTiered(t, opts, func(p objstorage.Provider) *lsm.Options {
		return smallDBOptions(fs, lsm.Leveled, clock, p)
	})
	ctx := context.Background()
	writeKeys(t, td.db, 0, 500)
	if err := td.m.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	writeKeys(t, td.db, 500, 8000)
	done := make(chan error, 1)
	go func() { done <- td.m.Upload(ctx) }()
	eventually(t, 30*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("upload pass ended before MinIO was killed: %v", err)
		default:
		}
		return td.m.Metrics().ObjectsUploaded >= 3
	}, "no upload progress")
	srv.Kill(t)
	if err := <-done; err == nil {
		t.Fatal("upload pass succeeded with MinIO killed")
	}
	if err := td.m.Backup(ctx); err == nil {
		t.Fatal("backup succeeded with MinIO down")
	}
	srv.Restart(t)
	td.m.limiter.SetLimit(rate.Inf) // the outage is over: no need to crawl
	if got := checkBackupsComplete(t, b, "node1"); got != 1 {
		t.Fatalf("%d backups", got)
	}
	if err := td.m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := td.m.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	checkBackupsComplete(t, b, "node1")
	inBucket := bucketObjects(t, b)
	for _, name := range catalogObjects(td.m) {
		if !slices.Contains(inBucket, name) {
			t.Fatalf("catalog entry %s has no object", name)
		}
	}
	td.reopen()
	for i := 0; i < 8500; i += 17 {
		v, _, err := td.db.Get([]byte(fmt.Sprintf("key-%06d", 2*i)))
		if err != nil || string(v) != string(value(i)) {
			t.Fatalf("Get(key %d) = %q, %v", i, v, err)
		}
	}
}

// TestBackgroundLoop: with the background loop on, cold objects are
// uploaded and manifest backups taken without calls from the test; Shutdown
// takes a final backup.
func TestBackgroundLoop(t *testing.T) {
	fs := vfs.NewMemFS()
	clock := newManualClock()
	mem := objectstore.NewMemBucket()
	opts := testOptions(fs, "/db", mem, nil, allCold(lsm.Leveled), clock)
	opts.DisableBackground = false
	opts.UploadInterval = time.Millisecond
	opts.BackupInterval = 5 * time.Millisecond
	td := openTiered(t, opts, func(p objstorage.Provider) *lsm.Options {
		return smallDBOptions(fs, lsm.Leveled, clock, p)
	})
	writeKeys(t, td.db, 0, 2000)
	eventually(t, 20*time.Second, func() bool {
		m := td.m.Metrics()
		return m.Backups > 0 && m.RemoteObjects > 0
	}, "background loop made no progress: %+v", td.m.Metrics())
	// Stop the periodic loop first, so that no periodic backup can land
	// between reading the count and Shutdown (stopLoop is idempotent).
	td.m.stopLoop()
	before := td.m.Metrics().Backups
	if err := td.m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if td.m.Metrics().Backups != before+1 {
		t.Fatal("Shutdown took no final backup")
	}
	checkBackupsComplete(t, mem, "node1")
}
