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
