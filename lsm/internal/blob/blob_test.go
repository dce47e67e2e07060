package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
)

func writeBlob(t *testing.T, p objstorage.Provider, values [][]byte) []Ref {
	t.Helper()
	w, err := p.Create(context.Background(), objstorage.FileTypeBlob, 7)
	if err != nil {
		t.Fatal(err)
	}
	bw := NewWriter(w, 7)
	var refs []Ref
	for _, v := range values {
		r, err := bw.Add(v)
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	if _, err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	return refs
}

// openBlob opens blob file 7 of p.
func openBlob(t *testing.T, p objstorage.Provider) *Reader {
	t.Helper()
	ctx := context.Background()
	rd, err := p.Open(ctx, objstorage.FileTypeBlob, 7)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, rd, "000007.blob")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRoundTripAndCorruption(t *testing.T) {
	fs := vfs.NewMemFS()
	p := objstorage.NewLocal(fs, "/")
	var values [][]byte
	for i := 0; i < 50; i++ {
		values = append(values, bytes.Repeat([]byte{byte(i)}, i*100))
	}
	refs := writeBlob(t, p, values)
	ctx := context.Background()
	r := openBlob(t, p)
	if r.Count() != 50 {
		t.Fatalf("count %d", r.Count())
	}
	for i, ref := range refs {
		got, err := r.ReadValue(ctx, ref)
		if err != nil || !bytes.Equal(got, values[i]) {
			t.Fatalf("value %d: %v", i, err)
		}
		dec, err := DecodeRef(ref.Encode(nil))
		if err != nil || dec != ref {
			t.Fatalf("ref round trip: %+v vs %+v (%v)", dec, ref, err)
		}
	}
	// A reference past the data is corruption, not a panic.
	if _, err := r.ReadValue(ctx, Ref{FileNum: 7, Offset: 1 << 40, Length: 10}); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("out-of-range reference: %v", err)
	}
	r.Close()

	// Flip a byte in value 10: reading it names the file and offset.
	f, _ := fs.OpenReadWrite("/" + objstorage.ObjectName(objstorage.FileTypeBlob, 7))
	st, _ := f.Stat()
	whole := make([]byte, st.Size())
	f.ReadAt(whole, 0)
	whole[refs[10].Offset+3] ^= 1
	f.Write(whole)
	f.Close()
	r = openBlob(t, p)
	defer r.Close()
	_, err := r.ReadValue(ctx, refs[10])
	if !errors.Is(err, base.ErrCorruption) || !bytes.Contains([]byte(err.Error()), []byte(fmt.Sprintf("offset %d", refs[10].Offset))) {
		t.Fatalf("corrupt value: %v", err)
	}
	if _, err := r.ReadValue(ctx, refs[11]); err != nil {
		t.Fatalf("neighbour of a corrupt value: %v", err)
	}
}

func FuzzDecodeRef(f *testing.F) {
	f.Add(Ref{FileNum: 12, Offset: 4096, Length: 10240}.Encode(nil))
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRef(b)
		if err != nil {
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatal(err)
			}
			return
		}
		if !bytes.Equal(r.Encode(nil), b) {
			// Non-minimal varints decode but re-encode shorter; both are
			// fine as long as the decode is stable.
			if r2, err := DecodeRef(r.Encode(nil)); err != nil || r2 != r {
				t.Fatalf("unstable decode: %+v %+v %v", r, r2, err)
			}
		}
	})
}

func FuzzOpen(f *testing.F) {
	fs := vfs.NewMemFS()
	p := objstorage.NewLocal(fs, "/")
	w, _ := p.Create(context.Background(), objstorage.FileTypeBlob, 7)
	bw := NewWriter(w, 7)
	bw.Add([]byte("hello"))
	bw.Close()
	rd, _ := p.Open(context.Background(), objstorage.FileTypeBlob, 7)
	buf := make([]byte, rd.Size())
	rd.ReadAt(context.Background(), buf, 0)
	f.Add(buf)
	f.Fuzz(func(t *testing.T, b []byte) {
		mfs := vfs.NewMemFS()
		file, _ := mfs.Create("/000001.blob")
		file.Write(b)
		file.Sync()
		mp := objstorage.NewLocal(mfs, "/")
		rd, err := mp.Open(context.Background(), objstorage.FileTypeBlob, 1)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(context.Background(), rd, "fuzz")
		if err != nil {
			return
		}
		_, _ = r.ReadValue(context.Background(), Ref{FileNum: 1, Offset: 0, Length: 5})
	})
}

// TestReadValueOnce checks the read a compaction uses to copy values: the
// same values as ReadValue, read into the caller's buffer where they fit,
// and checked against their CRCs.
func TestReadValueOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := objstorage.NewLocal(vfs.Default, dir)
	var values [][]byte
	for i := 0; i < 20; i++ {
		values = append(values, bytes.Repeat([]byte{byte('a' + i)}, 1000+i*500))
	}
	refs := writeBlob(t, p, values)
	r := openBlob(t, p)
	buf := make([]byte, 0, 8<<10)
	for i, ref := range refs {
		got, err := r.ReadValueOnce(ctx, ref, buf)
		if err != nil || !bytes.Equal(got, values[i]) {
			t.Fatalf("value %d: %d bytes, %v", i, len(got), err)
		}
		fits := int(ref.Length)+crcLen <= cap(buf)
		if aliases := &got[:1][0] == &buf[:1][0]; aliases != fits {
			t.Fatalf("value %d (%d bytes, buffer of %d): result aliases the buffer = %v", i, ref.Length, cap(buf), aliases)
		}
	}
	if _, err := r.ReadValueOnce(ctx, Ref{FileNum: 7, Offset: 1 << 40, Length: 10}, buf); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("out-of-range reference: %v", err)
	}
	r.Close()

	// A flipped byte is caught by ReadValueOnce too.
	name := dir + "/" + objstorage.ObjectName(objstorage.FileTypeBlob, 7)
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	if _, err := f.ReadAt(b, int64(refs[3].Offset+7)); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, int64(refs[3].Offset+7)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r = openBlob(t, p)
	defer r.Close()
	if _, err := r.ReadValueOnce(ctx, refs[3], buf); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("corrupt value: %v", err)
	}
	if got, err := r.ReadValueOnce(ctx, refs[4], buf); err != nil || !bytes.Equal(got, values[4]) {
		t.Fatalf("neighbour of a corrupt value: %v", err)
	}
}
