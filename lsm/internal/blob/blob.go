// Package blob stores large values apart from the tables that reference
// them (value separation, as in WiscKey, Badger's value log and Pebble v2's
// blob files). A flush writes the large values of a memtable into one blob
// file and puts a small reference in the table in their place; compactions
// then move references, not values, which keeps write amplification for
// large values near two (WAL + blob file).
//
// Blob file layout (part of the on-disk format; do not change):
//
//	+---------+-----------+---------+-----------+-----+--------+
//	| value 0 | crc32c(4) | value 1 | crc32c(4) | ... | footer |
//	+---------+-----------+---------+-----------+-----+--------+
//	footer (24 bytes): numValues (uint64 LE) | formatVersion (uint32 LE) |
//	                   crc32c of the previous 12 bytes (uint32 LE) | magic (uint64 LE)
//
// Each value's CRC32C (Castagnoli) follows it. A reference names the blob
// file, the value's offset and its length, so a value is one positional
// read of length+4 bytes: a remote blob file is one ranged GET per value.
package blob

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/objstorage"
)

// magic is part of the on-disk format; do not change.
const magic uint64 = 0x74696572626c6f62 // "tierblob"

const (
	// FooterLen is the size of the footer. Part of the on-disk format.
	FooterLen = 24
	// formatVersion is part of the on-disk format; do not change.
	formatVersion = 1
	// crcLen is the size of the CRC32C that follows every value.
	crcLen = 4
	// maxValueLen bounds a decoded reference's length.
	maxValueLen = 1 << 30
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Ref locates a value in a blob file.
type Ref struct {
	FileNum base.FileNum
	Offset  uint64
	Length  uint64
}

// Encode appends the reference's encoding (three uvarints) to dst. It is
// the table value of a base.KindValueRef entry.
func (r Ref) Encode(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(r.FileNum))
	dst = binary.AppendUvarint(dst, r.Offset)
	return binary.AppendUvarint(dst, r.Length)
}

// DecodeRef parses a reference. Bad bytes give an error wrapping
// base.ErrCorruption.
func DecodeRef(b []byte) (Ref, error) {
	var r Ref
	var vals [3]uint64
	for i := range vals {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return r, base.CorruptionErrorf("blob reference: bad varint")
		}
		vals[i], b = v, b[n:]
	}
	if len(b) != 0 || vals[2] > maxValueLen {
		return r, base.CorruptionErrorf("blob reference: malformed")
	}
	return Ref{FileNum: base.FileNum(vals[0]), Offset: vals[1], Length: vals[2]}, nil
}

// Writer appends values to a new blob file.
type Writer struct {
	w       objstorage.Writable
	num     base.FileNum
	off     uint64
	count   uint64
	scratch [crcLen]byte
	err     error
}

// NewWriter returns a Writer of blob file num writing to w.
func NewWriter(w objstorage.Writable, num base.FileNum) *Writer {
	return &Writer{w: w, num: num}
}

// Add appends value and returns its reference.
func (w *Writer) Add(value []byte) (Ref, error) {
	if w.err != nil {
		return Ref{}, w.err
	}
	ref := Ref{FileNum: w.num, Offset: w.off, Length: uint64(len(value))}
	binary.LittleEndian.PutUint32(w.scratch[:], crc32.Checksum(value, crcTable))
	if w.err = w.w.Write(value); w.err == nil {
		w.err = w.w.Write(w.scratch[:])
	}
	if w.err != nil {
		return Ref{}, w.err
	}
	w.off += uint64(len(value)) + crcLen
	w.count++
	return ref, nil
}

// Count returns the number of values added.
func (w *Writer) Count() uint64 { return w.count }

// Close writes the footer and makes the file durable. It returns the
// file's size.
func (w *Writer) Close() (uint64, error) {
	if w.err != nil {
		w.w.Abort()
		return 0, w.err
	}
	var f [FooterLen]byte
	binary.LittleEndian.PutUint64(f[0:], w.count)
	binary.LittleEndian.PutUint32(f[8:], formatVersion)
	binary.LittleEndian.PutUint32(f[12:], crc32.Checksum(f[:12], crcTable))
	binary.LittleEndian.PutUint64(f[16:], magic)
	if err := w.w.Write(f[:]); err != nil {
		w.w.Abort()
		return 0, err
	}
	if err := w.w.Finish(); err != nil {
		w.w.Abort()
		return 0, err
	}
	return w.off + FooterLen, nil
}

// Abort discards the file.
func (w *Writer) Abort() { w.w.Abort() }

// Reader reads values of one blob file. It is safe for concurrent use.
type Reader struct {
	r       objstorage.Readable
	name    string
	count   uint64
	segment bool // a former WAL segment: no footer
}

// Open checks the footer of the blob file read by r.
func Open(ctx context.Context, r objstorage.Readable, name string) (*Reader, error) {
	size := r.Size()
	if size < FooterLen {
		return nil, base.CorruptionErrorf("blob %s: size %d is smaller than the footer", name, size)
	}
	var f [FooterLen]byte
	if err := r.ReadAt(ctx, f[:], size-FooterLen); err != nil {
		return nil, fmt.Errorf("blob %s: read footer: %w", name, err)
	}
	if binary.LittleEndian.Uint64(f[16:]) != magic {
		return nil, base.CorruptionErrorf("blob %s: offset %d: bad magic", name, size-FooterLen)
	}
	if binary.LittleEndian.Uint32(f[12:]) != crc32.Checksum(f[:12], crcTable) {
		return nil, base.CorruptionErrorf("blob %s: offset %d: footer checksum mismatch", name, size-FooterLen)
	}
	if v := binary.LittleEndian.Uint32(f[8:]); v != formatVersion {
		return nil, base.CorruptionErrorf("blob %s: unknown format version %d", name, v)
	}
	return &Reader{r: r, name: name, count: binary.LittleEndian.Uint64(f[0:])}, nil
}

// OpenSegment returns a Reader of a former WAL segment: a file without a
// footer whose values are laid out like a blob file's (value, then its
// CRC32C) inside WAL records. References into it come from the flush of
// the segment's memtable.
func OpenSegment(r objstorage.Readable, name string) *Reader {
	return &Reader{r: r, name: name, segment: true}
}

// Count returns the number of values in the file.
func (r *Reader) Count() uint64 { return r.count }

// ReadValue reads and checks the value ref points at. The result is a new
// slice.
func (r *Reader) ReadValue(ctx context.Context, ref Ref) ([]byte, error) {
	return r.readValue(ctx, ref, nil, false)
}

// ReadValueOnce is ReadValue for a value read once and copied elsewhere (a
// compaction rewriting a blob file that is mostly garbage): it reads with
// objstorage.ReadOnce, into buf where the value fits. The result may alias
// buf.
func (r *Reader) ReadValueOnce(ctx context.Context, ref Ref, buf []byte) ([]byte, error) {
	return r.readValue(ctx, ref, buf, true)
}

func (r *Reader) readValue(ctx context.Context, ref Ref, buf []byte, once bool) ([]byte, error) {
	end := ref.Offset + ref.Length + crcLen
	limit := uint64(r.r.Size())
	if !r.segment {
		limit -= FooterLen
	}
	if end < ref.Offset || end > limit {
		return nil, base.CorruptionErrorf("blob %s: reference [%d, +%d) beyond the data", r.name, ref.Offset, ref.Length)
	}
	n := int(ref.Length + crcLen)
	if cap(buf) >= n {
		buf = buf[:n]
	} else {
		buf = make([]byte, n)
	}
	var err error
	if once {
		err = objstorage.ReadOnce(ctx, r.r, buf, int64(ref.Offset))
	} else {
		err = r.r.ReadAt(ctx, buf, int64(ref.Offset))
	}
	if err != nil {
		return nil, fmt.Errorf("blob %s: read at %d: %w", r.name, ref.Offset, err)
	}
	v := buf[:ref.Length]
	if binary.LittleEndian.Uint32(buf[ref.Length:]) != crc32.Checksum(v, crcTable) {
		return nil, base.CorruptionErrorf("blob %s: offset %d: value checksum mismatch", r.name, ref.Offset)
	}
	return v, nil
}

// Close closes the underlying object.
func (r *Reader) Close() error { return r.r.Close() }
