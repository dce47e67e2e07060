// Package manifest holds the engine's metadata: which tables exist at which
// level, the next file number, and the oldest WAL segment still needed. It
// changes only by VersionEdits, which the engine appends (synced) to the
// MANIFEST log before installing them; recovery replays the log.
//
// Edit encoding (part of the on-disk format; do not change the tags):
//
//	edit   := formatVersion(uvarint=1) field*
//	field  := tag(uvarint) body
//	tagLogNum       body: uvarint
//	tagNextFileNum  body: uvarint
//	tagDeletedTable body: level(uvarint) fileNum(uvarint)
//	tagNewTable     body: level fileNum size smallest largest minVersion
//	                      maxVersion entries tombstones createdUnixMilli
//	                      numBlobRefs (blobFileNum valueBytes)*
//	                      (keys are uvarint length + bytes, the rest uvarint)
//	tagNewBlob      body: fileNum size numValues valueBytes createdUnixMilli flags
//	                      (flags bit 0: the file is a former WAL segment)
//	tagDeletedBlob  body: fileNum
//
// The log framing (length, CRC32C) is the WAL's record format.
package manifest

import (
	"encoding/binary"
	"fmt"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

// NumLevels is the number of levels of a Version.
const NumLevels = 7

// editFormatVersion is part of the on-disk format; do not change.
const editFormatVersion = 1

// Tags of edit fields. Part of the on-disk format; do not change.
const (
	tagLogNum       = 1
	tagNextFileNum  = 2
	tagDeletedTable = 3
	tagNewTable     = 4
	tagNewBlob      = 5
	tagDeletedBlob  = 6
)

// maxBlobRefs bounds a decoded table's blob reference count.
const maxBlobRefs = 1 << 20

// maxKeyLen bounds keys in decoded edits so that bad bytes cannot make the
// decoder allocate without bound.
const maxKeyLen = 1 << 20

// TableMeta describes one table. It is immutable once in a Version.
type TableMeta struct {
	FileNum       base.FileNum
	Size          uint64
	Smallest      []byte
	Largest       []byte
	MinVersion    uint64
	MaxVersion    uint64
	NumEntries    uint64
	NumTombstones uint64
	// CreatedUnixMilli is when the table was written; age-based policies
	// (size-tiered tiering) use it.
	CreatedUnixMilli int64
	// BlobRefs lists the blob files the table's value references point
	// into, with the bytes of values referenced in each.
	BlobRefs []BlobRef
}

// BlobRef is the part of a blob file a table references.
type BlobRef struct {
	FileNum    base.FileNum
	ValueBytes uint64
}

// BlobMeta describes a blob file. It is immutable once in a Version.
type BlobMeta struct {
	FileNum          base.FileNum
	Size             uint64
	NumValues        uint64
	ValueBytes       uint64
	CreatedUnixMilli int64
	// Segment reports a former WAL segment that serves its values in
	// place: it has no blob footer, and ValueBytes is its whole size.
	Segment bool
}

const blobFlagSegment = 1

// NewTable is a table added to a level.
type NewTable struct {
	Level int
	Meta  *TableMeta
}

// DeletedTable is a table removed from a level.
type DeletedTable struct {
	Level   int
	FileNum base.FileNum
}

// VersionEdit is an atomic change to the engine's metadata.
type VersionEdit struct {
	// LogNum, when non-zero, is the oldest WAL segment that holds data not
	// yet in a table; older segments are obsolete.
	LogNum base.FileNum
	// NextFileNum, when non-zero, is the smallest unused file number.
	NextFileNum base.FileNum
	Deleted     []DeletedTable
	Added       []NewTable
	// AddedBlobs and DeletedBlobs change the set of live blob files.
	AddedBlobs   []*BlobMeta
	DeletedBlobs []base.FileNum
}

// Encode appends the edit's encoding to dst.
func (e *VersionEdit) Encode(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, editFormatVersion)
	if e.LogNum != 0 {
		dst = binary.AppendUvarint(dst, tagLogNum)
		dst = binary.AppendUvarint(dst, uint64(e.LogNum))
	}
	if e.NextFileNum != 0 {
		dst = binary.AppendUvarint(dst, tagNextFileNum)
		dst = binary.AppendUvarint(dst, uint64(e.NextFileNum))
	}
	for _, d := range e.Deleted {
		dst = binary.AppendUvarint(dst, tagDeletedTable)
		dst = binary.AppendUvarint(dst, uint64(d.Level))
		dst = binary.AppendUvarint(dst, uint64(d.FileNum))
	}
	for _, a := range e.Added {
		m := a.Meta
		dst = binary.AppendUvarint(dst, tagNewTable)
		dst = binary.AppendUvarint(dst, uint64(a.Level))
		dst = binary.AppendUvarint(dst, uint64(m.FileNum))
		dst = binary.AppendUvarint(dst, m.Size)
		dst = appendBytes(dst, m.Smallest)
		dst = appendBytes(dst, m.Largest)
		dst = binary.AppendUvarint(dst, m.MinVersion)
		dst = binary.AppendUvarint(dst, m.MaxVersion)
		dst = binary.AppendUvarint(dst, m.NumEntries)
		dst = binary.AppendUvarint(dst, m.NumTombstones)
		dst = binary.AppendUvarint(dst, uint64(m.CreatedUnixMilli))
		dst = binary.AppendUvarint(dst, uint64(len(m.BlobRefs)))
		for _, r := range m.BlobRefs {
			dst = binary.AppendUvarint(dst, uint64(r.FileNum))
			dst = binary.AppendUvarint(dst, r.ValueBytes)
		}
	}
	for _, b := range e.AddedBlobs {
		dst = binary.AppendUvarint(dst, tagNewBlob)
		dst = binary.AppendUvarint(dst, uint64(b.FileNum))
		dst = binary.AppendUvarint(dst, b.Size)
		dst = binary.AppendUvarint(dst, b.NumValues)
		dst = binary.AppendUvarint(dst, b.ValueBytes)
		dst = binary.AppendUvarint(dst, uint64(b.CreatedUnixMilli))
		var flags uint64
		if b.Segment {
			flags |= blobFlagSegment
		}
		dst = binary.AppendUvarint(dst, flags)
	}
	for _, n := range e.DeletedBlobs {
		dst = binary.AppendUvarint(dst, tagDeletedBlob)
		dst = binary.AppendUvarint(dst, uint64(n))
	}
	return dst
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = base.CorruptionErrorf("manifest edit: bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > maxKeyLen || n > uint64(len(d.b)) {
		d.err = base.CorruptionErrorf("manifest edit: key length %d out of range", n)
		return nil
	}
	v := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return v
}

func (d *decoder) level() int {
	l := d.uvarint()
	if d.err == nil && l >= NumLevels {
		d.err = base.CorruptionErrorf("manifest edit: level %d out of range", l)
	}
	return int(l)
}

// Decode parses an edit. Bad bytes give an error wrapping base.ErrCorruption.
func Decode(b []byte) (*VersionEdit, error) {
	d := &decoder{b: b}
	if v := d.uvarint(); d.err == nil && v != editFormatVersion {
		return nil, base.CorruptionErrorf("manifest edit: unknown format version %d", v)
	}
	e := &VersionEdit{}
	for d.err == nil && len(d.b) > 0 {
		switch tag := d.uvarint(); tag {
		case tagLogNum:
			e.LogNum = base.FileNum(d.uvarint())
		case tagNextFileNum:
			e.NextFileNum = base.FileNum(d.uvarint())
		case tagDeletedTable:
			l := d.level()
			e.Deleted = append(e.Deleted, DeletedTable{Level: l, FileNum: base.FileNum(d.uvarint())})
		case tagNewTable:
			l := d.level()
			m := &TableMeta{FileNum: base.FileNum(d.uvarint()), Size: d.uvarint()}
			m.Smallest = d.bytes()
			m.Largest = d.bytes()
			m.MinVersion = d.uvarint()
			m.MaxVersion = d.uvarint()
			m.NumEntries = d.uvarint()
			m.NumTombstones = d.uvarint()
			m.CreatedUnixMilli = int64(d.uvarint())
			n := d.uvarint()
			if n > maxBlobRefs {
				d.err = base.CorruptionErrorf("manifest edit: %d blob references", n)
			}
			for i := uint64(0); i < n && d.err == nil; i++ {
				m.BlobRefs = append(m.BlobRefs, BlobRef{FileNum: base.FileNum(d.uvarint()), ValueBytes: d.uvarint()})
			}
			e.Added = append(e.Added, NewTable{Level: l, Meta: m})
		case tagNewBlob:
			b := &BlobMeta{FileNum: base.FileNum(d.uvarint()), Size: d.uvarint(), NumValues: d.uvarint(), ValueBytes: d.uvarint()}
			b.CreatedUnixMilli = int64(d.uvarint())
			flags := d.uvarint()
			if flags&^blobFlagSegment != 0 && d.err == nil {
				d.err = base.CorruptionErrorf("manifest edit: unknown blob flags %#x", flags)
			}
			b.Segment = flags&blobFlagSegment != 0
			e.AddedBlobs = append(e.AddedBlobs, b)
		case tagDeletedBlob:
			e.DeletedBlobs = append(e.DeletedBlobs, base.FileNum(d.uvarint()))
		default:
			if d.err == nil {
				d.err = base.CorruptionErrorf("manifest edit: unknown tag %d", tag)
			}
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	return e, nil
}

func (e *VersionEdit) String() string {
	return fmt.Sprintf("edit{log=%d next=%d deleted=%d added=%d blobs+%d-%d}", e.LogNum, e.NextFileNum,
		len(e.Deleted), len(e.Added), len(e.AddedBlobs), len(e.DeletedBlobs))
}
