package sstable

import (
	"fmt"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Compression selects how the writer compresses data and index blocks.
// Readers decode any compression; the choice is recorded per block.
type Compression uint8

// The compressions.
const (
	// DefaultCompression is the zero value; EnsureDefaults replaces it with
	// S2Compression.
	DefaultCompression Compression = iota
	// NoCompression stores blocks as they are.
	NoCompression
	// S2Compression uses S2 (klauspost/compress/s2, a faster and denser
	// extension of Snappy): cheap enough for hot data.
	S2Compression
	// ZstdCompression uses zstd at its default level: smaller blocks for more
	// CPU, for colder data.
	ZstdCompression
)

// String implements fmt.Stringer.
func (c Compression) String() string {
	switch c {
	case DefaultCompression:
		return "default"
	case NoCompression:
		return "none"
	case S2Compression:
		return "s2"
	case ZstdCompression:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

var (
	zstdOnce sync.Once
	zstdEnc  *zstd.Encoder
	zstdDec  *zstd.Decoder
	zstdErr  error
)

// zstdCodecs returns the shared zstd encoder and decoder. Their EncodeAll
// and DecodeAll methods are safe for concurrent use.
func zstdCodecs() (*zstd.Encoder, *zstd.Decoder, error) {
	zstdOnce.Do(func() {
		// NB: single-segment frames always record the content size, which the
		// decoder requires (small multi-segment frames omit it).
		zstdEnc, zstdErr = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithSingleSegment(true))
		if zstdErr != nil {
			return
		}
		// NB: WithDecodeAllCapLimit makes DecodeAll stop at cap(dst), which
		// decompress sets from the frame header after bounding it.
		zstdDec, zstdErr = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(maxBlockSize),
			zstd.WithDecodeAllCapLimit(true))
	})
	return zstdEnc, zstdDec, zstdErr
}

// compress compresses raw with c into dst[:0] and returns the block type and
// the bytes to store. It stores raw as is (returning raw itself) unless
// compression saves at least 1/8 of the size.
func compress(c Compression, raw, dst []byte) (byte, []byte, error) {
	var out []byte
	var typ byte
	switch c {
	case NoCompression:
		return blockTypeNone, raw, nil
	case S2Compression:
		if n := s2.MaxEncodedLen(len(raw)); n < 0 {
			return blockTypeNone, raw, nil
		} else if cap(dst) < n {
			dst = make([]byte, n)
		}
		out = s2.Encode(dst[:cap(dst)], raw)
		typ = blockTypeS2
	case ZstdCompression:
		enc, _, err := zstdCodecs()
		if err != nil {
			return 0, nil, err
		}
		out = enc.EncodeAll(raw, dst[:0])
		typ = blockTypeZstd
	default:
		return 0, nil, fmt.Errorf("unknown compression %d", c)
	}
	if len(out) > len(raw)-len(raw)/8 {
		return blockTypeNone, raw, nil
	}
	return typ, out, nil
}

// decompress decodes the stored contents of a block of type typ. The result
// is a new slice, except for blockTypeNone, which returns src. A block that
// would decode to more than maxLen bytes is an error, detected before
// allocating.
func decompress(typ byte, src []byte, maxLen int) ([]byte, error) {
	switch typ {
	case blockTypeNone:
		return src, nil
	case blockTypeS2:
		n, err := s2.DecodedLen(src)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		if n > maxLen {
			return nil, fmt.Errorf("s2 block claims %d bytes, more than the limit of %d", n, maxLen)
		}
		out, err := s2.Decode(make([]byte, n), src)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		if len(out) != n {
			return nil, fmt.Errorf("s2 block decoded to %d bytes, header says %d", len(out), n)
		}
		return out, nil
	case blockTypeZstd:
		_, dec, err := zstdCodecs()
		if err != nil {
			return nil, err
		}
		var h zstd.Header
		if err := h.Decode(src); err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if !h.HasFCS {
			return nil, fmt.Errorf("zstd frame without content size")
		}
		if h.FrameContentSize > uint64(maxLen) {
			return nil, fmt.Errorf("zstd block claims %d bytes, more than the limit of %d", h.FrameContentSize, maxLen)
		}
		n := int(h.FrameContentSize)
		out, err := dec.DecodeAll(src, make([]byte, 0, n))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if len(out) != n {
			return nil, fmt.Errorf("zstd block decoded to %d bytes, header says %d", len(out), n)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown block type %d", typ)
}
