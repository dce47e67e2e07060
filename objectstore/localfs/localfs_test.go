package localfs_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/localfs"
	"github.com/tierkv/tierkv/objectstore/objectstoretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, dir string) *localfs.Bucket {
	t.Helper()
	b, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAcceptance(t *testing.T) {
	objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket {
		return open(t, filepath.Join(t.TempDir(), "root"))
	})
}

// TestPathTraversal checks that names escaping the root are rejected and
// create nothing, inside or outside the root.
func TestPathTraversal(t *testing.T) {
	parent := t.TempDir()
	b := open(t, filepath.Join(parent, "root"))
	ctx := context.Background()
	for _, name := range []string{"../escape", "a/../../escape", "/etc/escape", "..", "a/.tierkv-tmp-x"} {
		err := b.Put(ctx, name, bytes.NewReader([]byte("x")), 1)
		if !errors.Is(err, objectstore.ErrInvalidName) {
			t.Fatalf("Put(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 || entries[0].Name() != "root" {
		t.Fatalf("parent of the root holds %v", entries)
	}
	if entries, _ := os.ReadDir(filepath.Join(parent, "root")); len(entries) != 0 {
		t.Fatalf("root holds %v", entries)
	}
}

// TestTornUploadInvisible simulates a crash in the middle of a Put: the
// temporary file is never visible as an object and is removed by Open.
func TestTornUploadInvisible(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	objectstoretest.Put(t, b, "t/obj", []byte("complete"))
	torn := filepath.Join(dir, "t", localfs.TempPrefix+"123")
	if err := os.WriteFile(torn, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := objectstoretest.ListAll(t, b, "", 0); !slices.Equal(got, []string{"t/obj"}) {
		t.Fatalf("List = %q, want only t/obj", got)
	}
	b.Close()
	b = open(t, dir)
	defer b.Close()
	if _, err := os.Stat(torn); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open left the temporary file: %v", err)
	}
	if got := objectstoretest.Get(t, b, "t/obj"); string(got) != "complete" {
		t.Fatalf("Get = %q", got)
	}
}

// TestReaderNeverSeesPartial overwrites a large object while readers read
// it: each read returns one complete version.
func TestReaderNeverSeesPartial(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	ctx := context.Background()
	v1 := bytes.Repeat([]byte{1}, 3<<20)
	v2 := bytes.Repeat([]byte{2}, 2<<20+17)
	objectstoretest.Put(t, b, "big", v1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := objectstore.ReadAll(ctx, b, "big")
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, v1) && !bytes.Equal(got, v2) {
					errs <- errors.New("a reader saw a partial or mixed object")
					return
				}
			}
		})
	}
	for i := range 20 {
		v := v1
		if i%2 == 0 {
			v = v2
		}
		objectstoretest.Put(t, b, "big", v)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestPrefixConflicts(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	ctx := context.Background()
	objectstoretest.Put(t, b, "a/b", []byte("x"))
	if err := b.Put(ctx, "a", bytes.NewReader([]byte("y")), 1); err == nil {
		t.Fatal("Put(a) over the directory a/ succeeded")
	}
	if _, err := b.Get(ctx, "a"); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("Get of a directory = %v, want ErrNotExist", err)
	}
	if _, err := b.Get(ctx, "a/b/c"); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("Get below an object = %v, want ErrNotExist", err)
	}
	if err := b.Put(ctx, "a/b/c", bytes.NewReader([]byte("y")), 1); err == nil {
		t.Fatal("Put(a/b/c) below the object a/b succeeded")
	}
	if got := objectstoretest.Get(t, b, "a/b"); string(got) != "x" {
		t.Fatalf("Get(a/b) = %q", got)
	}
}
