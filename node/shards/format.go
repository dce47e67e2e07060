package shards

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/klauspost/reedsolomon"
)

// Rebuild repairs single shards without rewriting the object: it
// reconstructs a lost shard's payload from k others and gives it the
// header the original had (same object id), so the surviving shards stay
// valid and a reader never sees a mix of two uploads. For that it reads and
// writes objectstore/erasure's shard format, version 1, documented in
// objectstore/erasure/header.go:
//
//	0      4     5   6   7     8              16             24        28        32        36
//	|magic |vers | k | m |index| object size  | object id    | obj CRC | pay CRC | hdr CRC | payload ...
//	|"TKec"| 1   |u8 |u8 | u8  | u64 LE       | u64 LE       | u32 LE  | u32 LE  | u32 LE  |
//
// and uses the same Reed-Solomon code (klauspost/reedsolomon with default
// options). TestShardFormatMatchesErasure checks, against the erasure
// package itself, that a shard rebuilt here is byte for byte the one
// erasure wrote; a format change there fails it.
const (
	shardHeaderSize    = 36
	shardFormatVersion = 1
)

var shardMagic = [4]byte{'T', 'K', 'e', 'c'}

// errBadShard is wrapped by errors about a shard that fails its checks.
var errBadShard = errors.New("bad shard")

type shardHeader struct {
	k, m, index uint8
	objectSize  uint64
	objectID    uint64
	objectCRC   uint32
	payloadCRC  uint32
}

func (h shardHeader) payloadLen() int {
	if h.objectSize == 0 {
		return 0
	}
	return int((h.objectSize + uint64(h.k) - 1) / uint64(h.k))
}

func (h shardHeader) encode() []byte {
	p := make([]byte, shardHeaderSize)
	copy(p[0:4], shardMagic[:])
	p[4] = shardFormatVersion
	p[5], p[6], p[7] = h.k, h.m, h.index
	binary.LittleEndian.PutUint64(p[8:], h.objectSize)
	binary.LittleEndian.PutUint64(p[16:], h.objectID)
	binary.LittleEndian.PutUint32(p[24:], h.objectCRC)
	binary.LittleEndian.PutUint32(p[28:], h.payloadCRC)
	binary.LittleEndian.PutUint32(p[32:], crc32.Checksum(p[:32], castagnoli))
	return p
}

// parseShard decodes and checks a whole shard object. Any bytes are safe.
func parseShard(p []byte) (shardHeader, []byte, error) {
	bad := func(format string, args ...any) (shardHeader, []byte, error) {
		return shardHeader{}, nil, fmt.Errorf("%w: "+format, append([]any{errBadShard}, args...)...)
	}
	if len(p) < shardHeaderSize {
		return bad("%d bytes, shorter than the %d-byte header", len(p), shardHeaderSize)
	}
	if [4]byte(p[0:4]) != shardMagic {
		return bad("bad magic %q", p[0:4])
	}
	if got, want := binary.LittleEndian.Uint32(p[32:]), crc32.Checksum(p[:32], castagnoli); got != want {
		return bad("header CRC32C %08x, computed %08x", got, want)
	}
	if p[4] != shardFormatVersion {
		return bad("shard format version %d, this node knows %d", p[4], shardFormatVersion)
	}
	h := shardHeader{
		k: p[5], m: p[6], index: p[7],
		objectSize: binary.LittleEndian.Uint64(p[8:]),
		objectID:   binary.LittleEndian.Uint64(p[16:]),
		objectCRC:  binary.LittleEndian.Uint32(p[24:]),
		payloadCRC: binary.LittleEndian.Uint32(p[28:]),
	}
	if h.k == 0 || int(h.k)+int(h.m) > 256 || int(h.index) >= int(h.k)+int(h.m) || h.objectSize > 1<<62 {
		return bad("impossible header k=%d m=%d index=%d size=%d", h.k, h.m, h.index, h.objectSize)
	}
	payload := p[shardHeaderSize:]
	if len(payload) != h.payloadLen() {
		return bad("payload of %d bytes, want %d", len(payload), h.payloadLen())
	}
	if got := crc32.Checksum(payload, castagnoli); got != h.payloadCRC {
		return bad("payload CRC32C %08x, header says %08x", got, h.payloadCRC)
	}
	return h, payload, nil
}

// rebuildShards returns the shard objects of the slots in want, given the
// payloads of at least k good shards of one upload (nil for the others)
// and the header of one of them. It checks the object's CRC32C.
func rebuildShards(h shardHeader, payloads [][]byte, want []int) (map[int][]byte, error) {
	k, m := int(h.k), int(h.m)
	if len(payloads) != k+m {
		return nil, fmt.Errorf("%d payloads for RS(%d, %d)", len(payloads), k, m)
	}
	full := make([][]byte, k+m)
	copy(full, payloads)
	if h.objectSize > 0 {
		enc, err := reedsolomon.New(k, m)
		if err != nil {
			return nil, err
		}
		if err := enc.Reconstruct(full); err != nil {
			return nil, fmt.Errorf("reconstruct: %w", err)
		}
		crc, left := uint32(0), h.objectSize
		for _, p := range full[:k] {
			n := min(uint64(len(p)), left)
			crc = crc32.Update(crc, castagnoli, p[:n])
			left -= n
		}
		if crc != h.objectCRC {
			return nil, fmt.Errorf("%w: the reconstructed object has CRC32C %08x, the header says %08x", errBadShard, crc, h.objectCRC)
		}
	}
	out := make(map[int][]byte, len(want))
	for _, i := range want {
		hi := h
		hi.index = uint8(i)
		hi.payloadCRC = crc32.Checksum(full[i], castagnoli)
		out[i] = append(hi.encode(), full[i]...)
	}
	return out, nil
}
