package sstable

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// The constants below are part of the on-disk format; do not change.
const (
	// formatVersion is the table format version written in the footer.
	formatVersion uint32 = 1
	// tableMagic ends every table, in the footer.
	tableMagic = "tierkvT1"
	// footerSize is the fixed size of the footer.
	footerSize = 64
	// blockTrailerSize is the size of the trailer after every block: one
	// type byte and a crc32c.
	blockTrailerSize = 5
	// The block types of the trailer.
	blockTypeNone byte = 0
	blockTypeS2   byte = 1
	blockTypeZstd byte = 2
	// maxBlockTypeByte is the largest valid block type.
	maxBlockTypeByte = blockTypeZstd
	// entryFixedSize is the size of the fixed part of an entry after the
	// key suffix: version (8) and kind (1).
	entryFixedSize = 9
)

// restartInterval is the number of entries between restart points. It is a
// writer choice, not part of the format: readers use the restart array.
const restartInterval = 16

// maxBlockSize bounds the decoded size of a block. The writer refuses an
// entry that would make a block larger, and readers refuse to decompress
// a block that claims to be larger, so that corrupt bytes cannot make a
// reader allocate gigabytes.
const maxBlockSize = 256 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// blockHandle locates the contents of a block (without its trailer).
type blockHandle struct {
	offset, length uint64
}

// end returns the offset just past the block's trailer.
func (h blockHandle) end() uint64 { return h.offset + h.length + blockTrailerSize }

// encodeHandle appends h as two uvarints.
func encodeHandle(dst []byte, h blockHandle) []byte {
	dst = binary.AppendUvarint(dst, h.offset)
	return binary.AppendUvarint(dst, h.length)
}

// decodeHandle decodes a handle that must fill src exactly.
func decodeHandle(src []byte) (blockHandle, error) {
	off, n := binary.Uvarint(src)
	if n <= 0 {
		return blockHandle{}, fmt.Errorf("bad handle offset")
	}
	length, m := binary.Uvarint(src[n:])
	if m <= 0 || n+m != len(src) {
		return blockHandle{}, fmt.Errorf("bad handle length")
	}
	return blockHandle{off, length}, nil
}

// footer is the decoded fixed-size footer.
type footer struct {
	bloom, index, props blockHandle
}

func (f footer) encode() []byte {
	b := make([]byte, footerSize)
	binary.LittleEndian.PutUint64(b[0:], f.bloom.offset)
	binary.LittleEndian.PutUint64(b[8:], f.bloom.length)
	binary.LittleEndian.PutUint64(b[16:], f.index.offset)
	binary.LittleEndian.PutUint64(b[24:], f.index.length)
	binary.LittleEndian.PutUint64(b[32:], f.props.offset)
	binary.LittleEndian.PutUint64(b[40:], f.props.length)
	binary.LittleEndian.PutUint32(b[48:], formatVersion)
	copy(b[52:60], tableMagic)
	binary.LittleEndian.PutUint32(b[60:], crc32c(b[:60]))
	return b
}

// decodeFooter decodes the footer of a table of fileSize bytes and checks
// that the blocks it names are laid out contiguously before it. Errors
// describe the problem; the caller marks them as corruption with the table
// name and offset.
func decodeFooter(b []byte, fileSize uint64) (footer, error) {
	if len(b) != footerSize {
		return footer{}, fmt.Errorf("footer is %d bytes, want %d", len(b), footerSize)
	}
	if string(b[52:60]) != tableMagic {
		return footer{}, fmt.Errorf("bad magic number %q", b[52:60])
	}
	if got, want := binary.LittleEndian.Uint32(b[60:]), crc32c(b[:60]); got != want {
		return footer{}, fmt.Errorf("footer checksum mismatch: stored %#08x, computed %#08x", got, want)
	}
	if v := binary.LittleEndian.Uint32(b[48:]); v != formatVersion {
		return footer{}, fmt.Errorf("unsupported format version %d", v)
	}
	f := footer{
		bloom: blockHandle{binary.LittleEndian.Uint64(b[0:]), binary.LittleEndian.Uint64(b[8:])},
		index: blockHandle{binary.LittleEndian.Uint64(b[16:]), binary.LittleEndian.Uint64(b[24:])},
		props: blockHandle{binary.LittleEndian.Uint64(b[32:]), binary.LittleEndian.Uint64(b[40:])},
	}
	if fileSize < footerSize {
		return footer{}, fmt.Errorf("file of %d bytes is shorter than the footer", fileSize)
	}
	metaEnd := fileSize - footerSize
	// Check the layout without overflowing: every length is bounded by the
	// file size first.
	for _, h := range []blockHandle{f.bloom, f.index, f.props} {
		if h.offset > metaEnd || h.length > metaEnd {
			return footer{}, fmt.Errorf("block handle (%d, %d) beyond the end of the file", h.offset, h.length)
		}
	}
	if f.bloom.end() != f.index.offset || f.index.end() != f.props.offset || f.props.end() != metaEnd {
		return footer{}, fmt.Errorf("metadata blocks bloom (%d, %d), index (%d, %d), properties (%d, %d) are not contiguous up to the footer at %d",
			f.bloom.offset, f.bloom.length, f.index.offset, f.index.length, f.props.offset, f.props.length, metaEnd)
	}
	return f, nil
}

// blockTrailer returns the trailer of a block whose stored contents are b.
func blockTrailer(b []byte, typ byte) [blockTrailerSize]byte {
	var t [blockTrailerSize]byte
	t[0] = typ
	crc := crc32.Update(crc32.Checksum(b, crcTable), crcTable, t[:1])
	binary.LittleEndian.PutUint32(t[1:], crc)
	return t
}

// checkBlockTrailer verifies the trailer at the end of phys (contents plus
// trailer) and returns the stored contents and the block type.
func checkBlockTrailer(phys []byte) (contents []byte, typ byte, err error) {
	if len(phys) < blockTrailerSize {
		return nil, 0, fmt.Errorf("block of %d bytes is shorter than its trailer", len(phys))
	}
	n := len(phys) - blockTrailerSize
	contents, typ = phys[:n], phys[n]
	stored := binary.LittleEndian.Uint32(phys[n+1:])
	if computed := crc32.Checksum(phys[:n+1], crcTable); stored != computed {
		return nil, 0, fmt.Errorf("block checksum mismatch: stored %#08x, computed %#08x", stored, computed)
	}
	if typ > maxBlockTypeByte {
		return nil, 0, fmt.Errorf("unknown block type %d", typ)
	}
	return contents, typ, nil
}

// crc32c returns the Castagnoli checksum of b.
func crc32c(b []byte) uint32 { return crc32.Checksum(b, crcTable) }
