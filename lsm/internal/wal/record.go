package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

const (
	// headerSize is the size of a record header: crc32c, length and logNum,
	// 4 bytes each. Part of the on-disk format; do not change.
	headerSize = 12
	// RecordHeaderSize is the size of a record's header: a payload that
	// Replay reports at record offset off starts at off+RecordHeaderSize.
	RecordHeaderSize = headerSize

	// MaxPayloadSize is the largest payload a record may hold. Replay treats
	// a header with a larger length as a bad record. Part of the on-disk
	// format; do not change.
	MaxPayloadSize = 64 << 20
)

// crcTable is the CRC-32C (Castagnoli) table; crc32 uses the CPU's CRC32
// instructions for it where available.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// encodeHeader fills h (headerSize bytes) with the header of a record that
// holds payload in the segment with the given logNum.
func encodeHeader(h *[headerSize]byte, logNum uint32, payload []byte) {
	binary.LittleEndian.PutUint32(h[4:8], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[8:12], logNum)
	crc := crc32.Update(crcUpdate8(0, [8]byte(h[4:12])), crcTable, payload)
	binary.LittleEndian.PutUint32(h[0:4], crc)
}

// crcUpdate8 is crc32.Update(crc, crcTable, b[:]) for 8 bytes.
//
// NB: it exists because crc32.Update makes its argument escape, which would
// cost an allocation per Append for the header.
func crcUpdate8(crc uint32, b [8]byte) uint32 {
	crc = ^crc
	for _, c := range b {
		crc = crcTable[byte(crc)^c] ^ (crc >> 8)
	}
	return ^crc
}

// recordValid reports whether rec, a complete record (header and payload),
// has a matching checksum.
func recordValid(rec []byte) bool {
	return binary.LittleEndian.Uint32(rec[0:4]) == crc32.Checksum(rec[4:], crcTable)
}

// SegmentName returns the file name (not a path) of the segment with file
// number num, for example "000007.log".
func SegmentName(num base.FileNum) string {
	return fmt.Sprintf("%06d.log", uint64(num))
}

// ParseSegmentName parses a name produced by SegmentName and returns its
// file number. It reports false for any other name.
//
// NB: it accepts any number of decimal digits, not only six or more, so
// that hand-made or future names still parse; a sign or other character
// does not.
func ParseSegmentName(name string) (base.FileNum, bool) {
	digits, ok := strings.CutSuffix(name, ".log")
	if !ok || digits == "" {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	return base.FileNum(n), true
}
