package vfs

import (
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
)

func readAll(t *testing.T, fs FS, name string) string {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCrashCloneDurability checks the model the engine's crash tests rely
// on: only synced contents and synced directory entries survive.
func TestCrashCloneDurability(t *testing.T) {
	fs := NewMemFS()
	if err := fs.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	f, _ := fs.Create("/d/a")
	f.Write([]byte("synced"))
	f.Sync()
	f.Write([]byte("-unsynced"))

	// The entry of a is not durable until the directory is synced.
	if _, err := fs.CrashClone(nil).Stat("/d/a"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unsynced directory entry survived a crash: %v", err)
	}
	if err := SyncDir(fs, "/d"); err != nil {
		t.Fatal(err)
	}
	c := fs.CrashClone(nil)
	if got := readAll(t, c, "/d/a"); got != "synced" {
		t.Fatalf("crash image holds %q, want the synced prefix", got)
	}
	// With an rng, a crash keeps a prefix of the unsynced tail.
	for seed := uint64(0); seed < 20; seed++ {
		got := readAll(t, fs.CrashClone(rand.New(rand.NewPCG(seed, 0))), "/d/a")
		if len(got) < 6 || got != "synced-unsynced"[:len(got)] {
			t.Fatalf("torn crash image %q is not a prefix of the written data", got)
		}
	}
	// A rename is durable only after a directory sync.
	if err := fs.Rename("/d/a", "/d/b"); err != nil {
		t.Fatal(err)
	}
	c = fs.CrashClone(nil)
	if _, err := c.Stat("/d/a"); err != nil {
		t.Fatalf("old name lost before the rename was synced: %v", err)
	}
	SyncDir(fs, "/d")
	c = fs.CrashClone(nil)
	if _, err := c.Stat("/d/b"); err != nil {
		t.Fatalf("synced rename lost: %v", err)
	}
	if names, _ := c.List("/d"); len(names) != 1 {
		t.Fatalf("crash image lists %v", names)
	}
}

func TestMemFSLock(t *testing.T) {
	fs := NewMemFS()
	l, err := fs.Lock("/LOCK")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Lock("/LOCK"); err == nil {
		t.Fatal("a held lock was granted twice")
	}
	l.Close()
	if l2, err := fs.Lock("/LOCK"); err != nil {
		t.Fatalf("lock not released: %v", err)
	} else {
		l2.Close()
	}
}

func TestErrorFSInjects(t *testing.T) {
	efs := &ErrorFS{FS: NewMemFS(), Inject: func(op Op, name string) bool { return op == OpSync }}
	f, err := efs.Create("/x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, ErrInjected) {
		t.Fatalf("Sync = %v, want ErrInjected", err)
	}
	if efs.Injected.Load() != 1 {
		t.Fatalf("Injected = %d", efs.Injected.Load())
	}
}

func TestWriteFileAtomic(t *testing.T) {
	for _, fs := range []FS{NewMemFS(), Default} {
		dir := t.TempDir()
		if err := fs.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		name := fs.PathJoin(dir, "CURRENT")
		if err := WriteFileAtomic(fs, name, []byte("one")); err != nil {
			t.Fatal(err)
		}
		if err := WriteFileAtomic(fs, name, []byte("two")); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, fs, name); got != "two" {
			t.Fatalf("got %q", got)
		}
		if m, ok := fs.(*MemFS); ok {
			if got := readAll(t, m.CrashClone(nil), name); got != "two" {
				t.Fatalf("crash image holds %q", got)
			}
		}
	}
}
