package sstable

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/bits-and-blooms/bloom/v3"
)

// maxBloomHashes bounds the number of hash functions a decoded filter may
// use; the writer uses at most 30.
const maxBloomHashes = 64

// bloomHeaderSize is the size of the (m, k, bit count) header of the
// bits-and-blooms binary marshaling.
const bloomHeaderSize = 24

// filterWriter collects the keys of a table and builds its bloom filter at
// the end, when the number of keys is known. NB: it keeps a copy of every
// key (in one arena) because the library does not expose a way to add
// precomputed hashes.
type filterWriter struct {
	bitsPerKey int
	keys       []byte
	ends       []uint32
}

func (f *filterWriter) add(key []byte) {
	f.keys = append(f.keys, key...)
	f.ends = append(f.ends, uint32(len(f.keys)))
}

// bloomParams returns the filter size and hash count for n keys.
func bloomParams(n, bitsPerKey int) (m, k uint) {
	m = uint(max(n*bitsPerKey, 64))
	k = uint(math.Round(float64(bitsPerKey) * math.Ln2))
	return m, min(max(k, 1), 30)
}

// finish returns the filter block contents: empty when the table has no
// filter.
func (f *filterWriter) finish() ([]byte, error) {
	if f.bitsPerKey <= 0 {
		return nil, nil
	}
	m, k := bloomParams(len(f.ends), f.bitsPerKey)
	bf := bloom.New(m, k)
	start := uint32(0)
	for _, end := range f.ends {
		bf.Add(f.keys[start:end])
		start = end
	}
	return bf.MarshalBinary()
}

// decodeBloom decodes a filter block. Empty contents decode to nil (no
// filter). It validates the sizes in the header against the length of the
// block before unmarshaling, so that corrupt bytes cannot make it panic or
// allocate more than the block's size.
func decodeBloom(b []byte) (*bloom.BloomFilter, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < bloomHeaderSize {
		return nil, fmt.Errorf("bloom filter of %d bytes is shorter than its header", len(b))
	}
	m := binary.BigEndian.Uint64(b[0:])
	k := binary.BigEndian.Uint64(b[8:])
	bits := binary.BigEndian.Uint64(b[16:])
	if m == 0 || k == 0 || k > maxBloomHashes {
		return nil, fmt.Errorf("bloom filter with %d bits and %d hashes", m, k)
	}
	if bits != m {
		return nil, fmt.Errorf("bloom filter of %d bits has a bitset of %d bits", m, bits)
	}
	words := (bits + 63) / 64
	if words > uint64(len(b)-bloomHeaderSize)/8 || bloomHeaderSize+8*words != uint64(len(b)) {
		return nil, fmt.Errorf("bloom filter of %d bits does not fit its %d-byte block", bits, len(b))
	}
	var bf bloom.BloomFilter
	if err := bf.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("bloom filter: %w", err)
	}
	return &bf, nil
}
