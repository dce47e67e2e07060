package lsm

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"unicode/utf8"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

// Batch is a set of versioned mutations applied atomically: after a crash
// either all of them or none are visible. A Batch is not safe for concurrent
// use; it may be reused after Reset.
//
// The batch's encoding is its WAL payload (part of the on-disk format; do
// not change):
//
//	batch := count(uint32 LE) entry*
//	entry := kind(1) version(uint64 LE) uvarint(len(key)) key
//	         [uvarint(len(value)) value crc32c(value)(uint32 LE)]   (KindSet only)
//
// NB: each value is followed by its own CRC32C so that it has the layout of
// a value in a blob file: a flushed WAL segment serves its large values in
// place, as a blob file (see the blob package), and a reference to a value
// needs no other bytes of the record to be verified.
type Batch struct {
	repr  []byte
	count uint32
	err   error
}

const batchHeaderLen = 4

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// maxBatchCount bounds decoded counts so that bad bytes cannot make the
// decoder allocate without bound.
const maxBatchCount = 1 << 24

// Set adds a write of value under key at version. The batch copies key and
// value.
func (b *Batch) Set(key, value []byte, version uint64) {
	b.add(base.KindSet, key, value, version)
}

// Delete adds a tombstone for key at version.
func (b *Batch) Delete(key []byte, version uint64) {
	b.add(base.KindDelete, key, nil, version)
}

// Grow reserves room for n more mutations with keyValueBytes bytes of keys
// and values in all, so that a batch built from mutations of known sizes
// takes one allocation.
func (b *Batch) Grow(n, keyValueBytes int) {
	need := n*entryOverhead + keyValueBytes
	if len(b.repr) == 0 {
		if cap(b.repr) < batchHeaderLen+need {
			b.repr = make([]byte, 0, batchHeaderLen+need)
		}
		b.repr = append(b.repr[:0], 0, 0, 0, 0) // the count (batchHeaderLen)
		return
	}
	b.repr = slices.Grow(b.repr, need)
}

// entryOverhead bounds an entry's bytes beyond its key and value: kind,
// version, two uvarint lengths and the value's CRC.
const entryOverhead = 1 + 8 + 2*binary.MaxVarintLen32 + 4

func (b *Batch) add(kind base.Kind, key, value []byte, version uint64) {
	if len(b.repr) == 0 {
		b.Grow(1, len(key)+len(value))
	}
	b.repr = append(b.repr, byte(kind))
	b.repr = binary.LittleEndian.AppendUint64(b.repr, version)
	b.repr = binary.AppendUvarint(b.repr, uint64(len(key)))
	b.repr = append(b.repr, key...)
	if kind == base.KindSet {
		b.repr = binary.AppendUvarint(b.repr, uint64(len(value)))
		b.repr = append(b.repr, value...)
		b.repr = binary.LittleEndian.AppendUint32(b.repr, crc32.Checksum(value, crcTable))
	}
	b.count++
	binary.LittleEndian.PutUint32(b.repr, b.count)
}

// Len returns the number of mutations in the batch.
func (b *Batch) Len() int { return int(b.count) }

// Size returns the encoded size of the batch in bytes.
func (b *Batch) Size() int { return len(b.repr) }

// Reset empties the batch, keeping its buffer.
func (b *Batch) Reset() {
	b.repr = b.repr[:0]
	b.count = 0
	b.err = nil
}

// validate checks every mutation against the options' bounds.
func (b *Batch) validate(o *Options) error {
	return decodeBatch(b.repr, func(e base.Entry, _ int) error {
		switch {
		case len(e.Key) == 0:
			return fmt.Errorf("%w: empty key", ErrInvalidInput)
		case len(e.Key) > o.MaxKeySize:
			return fmt.Errorf("%w: key of %d bytes exceeds the limit of %d", ErrInvalidInput, len(e.Key), o.MaxKeySize)
		case len(e.Value) > o.MaxValueSize:
			return fmt.Errorf("%w: value of %d bytes exceeds the limit of %d", ErrInvalidInput, len(e.Value), o.MaxValueSize)
		case !utf8.Valid(e.Key):
			return fmt.Errorf("%w: key is not valid UTF-8", ErrInvalidInput)
		case e.Version == 0:
			return fmt.Errorf("%w: version 0 is reserved", ErrInvalidInput)
		}
		return nil
	})
}

// decodeBatch calls fn for each entry of an encoded batch with the offset
// of its value in repr (0 for a tombstone). The entry's slices alias repr.
// Bad bytes, including a value whose CRC does not match, give an error
// wrapping ErrCorruption.
func decodeBatch(repr []byte, fn func(e base.Entry, valueOff int) error) error {
	if len(repr) == 0 {
		return nil
	}
	if len(repr) < batchHeaderLen {
		return base.CorruptionErrorf("batch: %d bytes is shorter than its header", len(repr))
	}
	count := binary.LittleEndian.Uint32(repr)
	if count > maxBatchCount {
		return base.CorruptionErrorf("batch: count %d out of range", count)
	}
	p := repr[batchHeaderLen:]
	readBytes := func() ([]byte, bool) {
		n, w := binary.Uvarint(p)
		if w <= 0 || n > uint64(len(p)-w) {
			return nil, false
		}
		v := p[w : w+int(n)]
		p = p[w+int(n):]
		return v, true
	}
	for i := uint32(0); i < count; i++ {
		if len(p) < 9 {
			return base.CorruptionErrorf("batch: entry %d truncated", i)
		}
		e := base.Entry{Kind: base.Kind(p[0]), Version: binary.LittleEndian.Uint64(p[1:9])}
		if e.Kind != base.KindSet && e.Kind != base.KindDelete {
			return base.CorruptionErrorf("batch: entry %d has unknown kind %d", i, p[0])
		}
		p = p[9:]
		var ok bool
		if e.Key, ok = readBytes(); !ok {
			return base.CorruptionErrorf("batch: entry %d key truncated", i)
		}
		valueOff := 0
		if e.Kind == base.KindSet {
			if e.Value, ok = readBytes(); !ok || len(p) < 4 {
				return base.CorruptionErrorf("batch: entry %d value truncated", i)
			}
			valueOff = len(repr) - len(p) - len(e.Value)
			if binary.LittleEndian.Uint32(p) != crc32.Checksum(e.Value, crcTable) {
				return base.CorruptionErrorf("batch: entry %d value checksum mismatch", i)
			}
			p = p[4:]
		}
		if err := fn(e, valueOff); err != nil {
			return err
		}
	}
	if len(p) != 0 {
		return base.CorruptionErrorf("batch: %d trailing bytes", len(p))
	}
	return nil
}
