package objstorage

import (
	"bytes"
	"context"
	"testing"

	"github.com/tierkv/tierkv/lsm/vfs"
)

// writeObject writes data as blob 1 of p and opens it.
func writeObject(t *testing.T, p Provider, data []byte) Readable {
	t.Helper()
	ctx := context.Background()
	w, err := p.Create(ctx, FileTypeBlob, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	r, err := p.Open(ctx, FileTypeBlob, 1)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReadOnceBypassesMapping checks that ReadOnce reads a mapped local
// file with pread, not through its mapping, and that both reads check
// their bounds.
func TestReadOnceBypassesMapping(t *testing.T) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("tierkv"), 5000)
	r := writeObject(t, NewLocal(vfs.Default, t.TempDir()), data)
	defer r.Close()
	lr := r.(*localReadable)
	if lr.mapped == nil {
		t.Fatal("an OS file is not mapped")
	}
	got := make([]byte, 100)
	if err := ReadOnce(ctx, r, got, 6000); err != nil || !bytes.Equal(got, data[6000:6100]) {
		t.Fatalf("ReadOnce = %q, %v", got, err)
	}
	// Swap the mapping for other bytes: ReadAt sees them, ReadOnce does not.
	real := lr.mapped
	lr.mapped = bytes.Repeat([]byte{'x'}, len(data))
	defer func() { lr.mapped = real }()
	if err := r.ReadAt(ctx, got, 6000); err != nil || got[0] != 'x' {
		t.Fatalf("ReadAt did not read the mapping: %q, %v", got[:8], err)
	}
	if err := ReadOnce(ctx, r, got, 6000); err != nil || !bytes.Equal(got, data[6000:6100]) {
		t.Fatalf("ReadOnce read the mapping: %q, %v", got[:8], err)
	}
	for _, off := range []int64{-1, int64(len(data)) - 99} {
		if err := ReadOnce(ctx, r, got, off); err == nil {
			t.Errorf("ReadOnce of [%d, +100) in a %d-byte file succeeded", off, len(data))
		}
		if err := r.ReadAt(ctx, got, off); err == nil {
			t.Errorf("ReadAt of [%d, +100) in a %d-byte file succeeded", off, len(data))
		}
	}
}

// TestReadOnceMemFS checks ReadOnce on an object that is not mapped.
func TestReadOnceMemFS(t *testing.T) {
	ctx := context.Background()
	r := writeObject(t, NewLocal(vfs.NewMemFS(), "/"), []byte("0123456789"))
	defer r.Close()
	got := make([]byte, 4)
	if err := ReadOnce(ctx, r, got, 3); err != nil || string(got) != "3456" {
		t.Fatalf("ReadOnce = %q, %v", got, err)
	}
	if err := ReadOnce(ctx, r, got, 7); err == nil {
		t.Fatal("ReadOnce past the end succeeded")
	}
}
