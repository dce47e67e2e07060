package lsm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

func TestBatchRoundTrip(t *testing.T) {
	var b Batch
	b.Set([]byte("a"), []byte("1"), 10)
	b.Delete([]byte("b"), 11)
	b.Set([]byte("c"), nil, 12)
	var got []base.Entry
	if err := decodeBatch(b.repr, func(e base.Entry, off int) error {
		if e.Kind == base.KindSet && !bytes.Equal(b.repr[off:off+len(e.Value)], e.Value) {
			t.Fatalf("value offset %d does not locate the value", off)
		}
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || b.Len() != 3 || got[1].Kind != base.KindDelete || got[1].Version != 11 ||
		!bytes.Equal(got[0].Value, []byte("1")) || got[2].Kind != base.KindSet || len(got[2].Value) != 0 {
		t.Fatalf("decoded %+v", got)
	}
	b.Reset()
	if b.Len() != 0 || b.Size() != 0 {
		t.Fatal("Reset left data")
	}
}

// FuzzDecodeBatch feeds arbitrary WAL payloads to the batch decoder: it
// returns entries or a corruption error, never panics, and never yields a
// kind other than SET or DEL.
func FuzzDecodeBatch(f *testing.F) {
	var b Batch
	b.Set([]byte("key"), []byte("value"), 7)
	b.Delete([]byte("gone"), 8)
	f.Add(b.repr)
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		err := decodeBatch(p, func(e base.Entry, _ int) error {
			if e.Kind != base.KindSet && e.Kind != base.KindDelete {
				t.Fatalf("decoded kind %v", e.Kind)
			}
			return nil
		})
		if err != nil && !errors.Is(err, base.ErrCorruption) {
			t.Fatalf("error %v does not wrap ErrCorruption", err)
		}
	})
}

// TestApplyKeepsBatchBuffer checks that the memtable keeps an applied
// batch's buffer safely: the batch is empty after Apply, and building,
// resetting and applying it again changes nothing already applied.
func TestApplyKeepsBatchBuffer(t *testing.T) {
	db, _ := openMem(t, nil)
	defer db.Close()
	v1 := bytes.Repeat([]byte{'1'}, 10<<10)
	var b Batch
	b.Grow(2, 2+2*len(v1))
	b.Set([]byte("k1"), v1, 10)
	b.Set([]byte("k2"), v1, 11)
	if err := db.Apply(&b, Sync); err != nil {
		t.Fatal(err)
	}
	if b.Len() != 0 || b.Size() != 0 {
		t.Fatalf("after Apply the batch holds %d mutations, %d bytes", b.Len(), b.Size())
	}
	// Reuse the batch: had the memtable kept a buffer the batch writes
	// into again, k1 and k2 would now read back as '2's or as garbage.
	v2 := bytes.Repeat([]byte{'2'}, 10<<10)
	for i := 0; i < 3; i++ {
		b.Reset()
		b.Set([]byte("k1x"), v2, uint64(20+i))
		b.Set([]byte("k3"), v2, uint64(20+i))
		if err := db.Apply(&b, Sync); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"k1", "k2"} {
		if v, _, err := db.Get([]byte(k)); err != nil || !bytes.Equal(v, v1) {
			t.Fatalf("%s after the batch was reused: %d bytes, %v", k, len(v), err)
		}
	}
	if v, _, err := db.Get([]byte("k3")); err != nil || !bytes.Equal(v, v2) {
		t.Fatalf("k3: %d bytes, %v", len(v), err)
	}
}

// TestBatchGrow checks that a batch grown for its mutations takes one
// allocation however many values it holds.
func TestBatchGrow(t *testing.T) {
	v := make([]byte, 10<<10)
	keys := [][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("d")}
	allocs := testing.AllocsPerRun(20, func() {
		var b Batch
		b.Grow(len(keys), len(keys)*(1+len(v)))
		for i, k := range keys {
			b.Set(k, v, uint64(i+1))
		}
	})
	if allocs != 1 {
		t.Fatalf("a grown batch of %d values took %v allocations, want 1", len(keys), allocs)
	}
	var b Batch
	b.Grow(1, 1)
	b.Set([]byte("x"), []byte("y"), 1)
	if b.Len() != 1 || b.Size() == 0 {
		t.Fatalf("batch after Grow: %d mutations, %d bytes", b.Len(), b.Size())
	}
}
