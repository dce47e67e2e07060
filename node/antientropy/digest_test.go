package antientropy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"reflect"
	"testing"
)

func sampleDigests() []KeyDigest {
	return []KeyDigest{
		{Key: []byte("a"), Version: 1, ValueHash: 7},
		{Key: []byte("ab"), Version: 2, Deleted: true, ValueHash: 0xef46db3751d8e999},
		{Key: []byte("abc/\xff"), Version: 1 << 63, ValueHash: 1},
		{Key: []byte("b"), Version: 3},
	}
}

// TestDigestsRoundTrip: lists decode to what was encoded, and each corrupt
// variant is an error wrapping ErrCorruptDigests.
func TestDigestsRoundTrip(t *testing.T) {
	for _, ds := range [][]KeyDigest{nil, sampleDigests()} {
		b := AppendDigests(nil, ds)
		got, err := DecodeDigests(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 && len(got) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, ds) {
			t.Fatalf("got %+v, want %+v", got, ds)
		}
	}
	b := AppendDigests(nil, sampleDigests())
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		if _, err := DecodeDigests(c); !errors.Is(err, ErrCorruptDigests) {
			t.Errorf("flip at %d: %v", i, err)
		}
	}
	for n := range len(b) {
		if _, err := DecodeDigests(b[:n]); !errors.Is(err, ErrCorruptDigests) {
			t.Errorf("truncated to %d: %v", n, err)
		}
	}
}

// FuzzDigests: decoding never panics, and whatever decodes re-encodes to the
// same bytes (one encoding per list).
func FuzzDigests(f *testing.F) {
	f.Add(AppendDigests(nil, nil))
	f.Add(AppendDigests(nil, sampleDigests()))
	f.Add([]byte{1, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		// As given, and with the checksum fixed up so that the fuzzer
		// reaches the decoder beyond it.
		fixed := binary.LittleEndian.AppendUint32(bytes.Clone(b), crc32.Checksum(b, crcTable))
		for _, in := range [][]byte{b, fixed} {
			ds, err := DecodeDigests(in)
			if err != nil {
				if !errors.Is(err, ErrCorruptDigests) {
					t.Fatalf("error %v does not wrap ErrCorruptDigests", err)
				}
				continue
			}
			if again := AppendDigests(nil, ds); !bytes.Equal(again, in) {
				t.Fatalf("re-encoding differs:\n%x\n%x", in, again)
			}
		}
	})
}
