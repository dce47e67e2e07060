package sstable

import (
	"encoding/binary"
	"fmt"
)

// Properties describes a table. The writer computes them and stores them in
// the table; the reader returns them.
type Properties struct {
	// SmallestKey is the first key of the table (nil for an empty table).
	SmallestKey []byte
	// LargestKey is the last key of the table (nil for an empty table).
	LargestKey []byte
	// MinVersion is the smallest version of an entry (0 when empty).
	MinVersion uint64
	// MaxVersion is the largest version of an entry (0 when empty).
	MaxVersion uint64
	// NumEntries is the number of entries.
	NumEntries uint64
	// NumTombstones is the number of KindDelete entries.
	NumTombstones uint64
	// RawKeyBytes is the sum of the key lengths.
	RawKeyBytes uint64
	// RawValueBytes is the sum of the value lengths.
	RawValueBytes uint64
	// NumDataBlocks is the number of data blocks.
	NumDataBlocks uint64
	// DataSize is the size of the data blocks, with their trailers, which is
	// also the offset of the bloom block.
	DataSize uint64
	// FileSize is the size of the table file. It is not stored in the
	// properties block: the reader sets it from the file size.
	FileSize uint64
}

// The property tags. Part of the on-disk format; do not change.
const (
	propSmallestKey   = 1
	propLargestKey    = 2
	propMinVersion    = 3
	propMaxVersion    = 4
	propNumEntries    = 5
	propNumTombstones = 6
	propRawKeyBytes   = 7
	propRawValueBytes = 8
	propNumDataBlocks = 9
	propDataSize      = 10
)

// encode returns the properties block contents.
func (p *Properties) encode() []byte {
	var b []byte
	putBytes := func(tag uint64, v []byte) {
		b = binary.AppendUvarint(b, tag)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	putUint := func(tag, v uint64) {
		var tmp [binary.MaxVarintLen64]byte
		putBytes(tag, binary.AppendUvarint(tmp[:0], v))
	}
	putBytes(propSmallestKey, p.SmallestKey)
	putBytes(propLargestKey, p.LargestKey)
	putUint(propMinVersion, p.MinVersion)
	putUint(propMaxVersion, p.MaxVersion)
	putUint(propNumEntries, p.NumEntries)
	putUint(propNumTombstones, p.NumTombstones)
	putUint(propRawKeyBytes, p.RawKeyBytes)
	putUint(propRawValueBytes, p.RawValueBytes)
	putUint(propNumDataBlocks, p.NumDataBlocks)
	putUint(propDataSize, p.DataSize)
	return b
}

// decodeProperties decodes a properties block. Tags must be strictly
// increasing; unknown tags are skipped. The keys are copied.
func decodeProperties(b []byte) (Properties, error) {
	var p Properties
	var lastTag uint64
	var seen uint64 // bit t is set once known tag t is decoded
	for off := 0; off < len(b); {
		tag, n := binary.Uvarint(b[off:])
		if n <= 0 {
			return Properties{}, fmt.Errorf("properties: bad tag at %d", off)
		}
		if tag <= lastTag {
			return Properties{}, fmt.Errorf("properties: tag %d after tag %d at %d", tag, lastTag, off)
		}
		lastTag = tag
		off += n
		l, n := binary.Uvarint(b[off:])
		if n <= 0 || l > uint64(len(b)-off-n) {
			return Properties{}, fmt.Errorf("properties: bad length of tag %d at %d", tag, off)
		}
		off += n
		v := b[off : off+int(l)]
		off += int(l)
		if tag <= propDataSize {
			seen |= 1 << tag
		}
		var u uint64
		switch tag {
		case propSmallestKey:
			p.SmallestKey = append([]byte{}, v...)
			continue
		case propLargestKey:
			p.LargestKey = append([]byte{}, v...)
			continue
		case propMinVersion, propMaxVersion, propNumEntries, propNumTombstones,
			propRawKeyBytes, propRawValueBytes, propNumDataBlocks, propDataSize:
			var m int
			u, m = binary.Uvarint(v)
			if m <= 0 || m != len(v) {
				return Properties{}, fmt.Errorf("properties: bad value of tag %d", tag)
			}
		default:
			continue // a property of a later version
		}
		switch tag {
		case propMinVersion:
			p.MinVersion = u
		case propMaxVersion:
			p.MaxVersion = u
		case propNumEntries:
			p.NumEntries = u
		case propNumTombstones:
			p.NumTombstones = u
		case propRawKeyBytes:
			p.RawKeyBytes = u
		case propRawValueBytes:
			p.RawValueBytes = u
		case propNumDataBlocks:
			p.NumDataBlocks = u
		case propDataSize:
			p.DataSize = u
		}
	}
	if allTags := uint64(1<<(propDataSize+1) - 2); seen != allTags {
		return Properties{}, fmt.Errorf("properties: missing tags (seen %#x)", seen)
	}
	return p, nil
}
