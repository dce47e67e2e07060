package antientropy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// ErrCorruptDigests marks a digest list that does not decode.
var ErrCorruptDigests = errors.New("antientropy: corrupt digest list")

// digestFormatV1 is the version byte of an encoded digest list (part of the
// wire format; do not change).
const digestFormatV1 = 1

// maxDigestKey bounds a key in a digest list (the engine's own bound is 64
// KiB).
const maxDigestKey = 1 << 16

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// AppendDigests appends the encoding of ds, which must be sorted by key with
// no duplicates (as LeafDigests returns them), to dst. The node's gRPC
// adapter can carry a LeafDigests answer as one bytes field:
//
//	list   := format(u8 = 1) | count (uvarint) | digest* | crc32c (u32 LE) of all before
//	digest := shared (uvarint) | len(suffix) (uvarint) | suffix
//	          | version (u64 LE) | flags (u8: bit 0 = deleted) | value hash (u64 LE)
//
// shared is the length of the prefix the key shares with the previous one
// (0 for the first), suffix the rest of the key. Sorted keys share long
// prefixes, so this is much smaller than the keys themselves.
func AppendDigests(dst []byte, ds []KeyDigest) []byte {
	start := len(dst)
	dst = append(dst, digestFormatV1)
	dst = binary.AppendUvarint(dst, uint64(len(ds)))
	var prev []byte
	for _, d := range ds {
		shared := lcp(prev, d.Key)
		dst = binary.AppendUvarint(dst, uint64(shared))
		dst = binary.AppendUvarint(dst, uint64(len(d.Key)-shared))
		dst = append(dst, d.Key[shared:]...)
		dst = binary.LittleEndian.AppendUint64(dst, d.Version)
		var flags byte
		if d.Deleted {
			flags = 1
		}
		dst = append(dst, flags)
		dst = binary.LittleEndian.AppendUint64(dst, d.ValueHash)
		prev = d.Key
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable))
}

// uvarint is binary.Uvarint that also rejects non-minimal encodings (such
// as 0x80 0x00 for 0), so that a list has exactly one encoding. It returns
// n <= 0 for bad bytes.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 0 && n != uvarintLen(v) {
		return 0, -1
	}
	return v, n
}

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

// DecodeDigests decodes a list encoded by AppendDigests. The keys it returns
// do not alias b. Bad bytes (checksum, truncation, unknown format or flags,
// keys not strictly increasing or longer than 64 KiB) give an error wrapping
// ErrCorruptDigests; it never panics.
func DecodeDigests(b []byte) ([]KeyDigest, error) {
	if len(b) < 1+1+4 {
		return nil, fmt.Errorf("%w: %d bytes", ErrCorruptDigests, len(b))
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptDigests)
	}
	if body[0] != digestFormatV1 {
		return nil, fmt.Errorf("%w: unknown format %d", ErrCorruptDigests, body[0])
	}
	p := body[1:]
	count, n := uvarint(p)
	if n <= 0 {
		return nil, fmt.Errorf("%w: bad count", ErrCorruptDigests)
	}
	p = p[n:]
	// Each digest takes at least 2+17 bytes: bound the allocation.
	if count > uint64(len(p)/19) {
		return nil, fmt.Errorf("%w: %d digests in %d bytes", ErrCorruptDigests, count, len(p))
	}
	out := make([]KeyDigest, 0, count)
	var prev []byte
	for i := uint64(0); i < count; i++ {
		shared, n := uvarint(p)
		if n <= 0 {
			return nil, fmt.Errorf("%w: digest %d: bad shared length", ErrCorruptDigests, i)
		}
		p = p[n:]
		suffix, n := uvarint(p)
		if n <= 0 {
			return nil, fmt.Errorf("%w: digest %d: bad suffix length", ErrCorruptDigests, i)
		}
		p = p[n:]
		if shared > uint64(len(prev)) || suffix > uint64(len(p)) || shared+suffix > maxDigestKey {
			return nil, fmt.Errorf("%w: digest %d: bad key lengths %d+%d", ErrCorruptDigests, i, shared, suffix)
		}
		key := make([]byte, 0, shared+suffix)
		key = append(key, prev[:shared]...)
		key = append(key, p[:suffix]...)
		p = p[suffix:]
		if len(p) < 17 {
			return nil, fmt.Errorf("%w: digest %d: truncated", ErrCorruptDigests, i)
		}
		if i > 0 && bytes.Compare(key, prev) <= 0 {
			return nil, fmt.Errorf("%w: digest %d: keys not increasing", ErrCorruptDigests, i)
		}
		if i > 0 && lcp(prev, key) != int(shared) {
			// Not the encoder's (longest) shared prefix: reject, so that
			// a list has exactly one encoding.
			return nil, fmt.Errorf("%w: digest %d: shared prefix not maximal", ErrCorruptDigests, i)
		}
		if flags := p[8]; flags > 1 {
			return nil, fmt.Errorf("%w: digest %d: unknown flags %#x", ErrCorruptDigests, i, flags)
		}
		out = append(out, KeyDigest{
			Key:       key,
			Version:   binary.LittleEndian.Uint64(p),
			Deleted:   p[8] == 1,
			ValueHash: binary.LittleEndian.Uint64(p[9:]),
		})
		p = p[17:]
		prev = key
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorruptDigests, len(p))
	}
	return out, nil
}

// lcp returns the length of the longest common prefix of a and b.
func lcp(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
