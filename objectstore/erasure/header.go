package erasure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A shard object is a fixed-size header followed by the shard's payload:
//
//	0      4     5   6   7     8              16             24        28        32        36
//	+------+-----+---+---+-----+--------------+--------------+---------+---------+---------+
//	|magic |vers | k | m |index| object size  | object id    | obj CRC | pay CRC | hdr CRC | payload ...
//	|"TKec"| 1   |u8 |u8 | u8  | u64 LE       | u64 LE       | u32 LE  | u32 LE  | u32 LE  | ceil(size/k) bytes
//	+------+-----+---+---+-----+--------------+--------------+---------+---------+---------+
//
// obj CRC is the CRC32C of the whole object, pay CRC the CRC32C of this
// shard's payload, hdr CRC the CRC32C of bytes [0, 32). The object id is a
// random number shared by the shards of one Put: shards of different Puts
// of the same name are never mixed. Data shard i holds bytes
// [i*L, (i+1)*L) of the object (L = ceil(size/k)), zero-padded at the end;
// shards k..k+m-1 are Reed-Solomon parity.
//
// This layout is part of the on-disk format; do not change it without
// bumping formatVersion.
const (
	headerSize    = 36
	formatVersion = 1
)

var magic = [4]byte{'T', 'K', 'e', 'c'}

// ErrCorruptShard is wrapped by errors about a shard whose header or
// payload fails its checks.
var ErrCorruptShard = errors.New("objectstore/erasure: corrupt shard")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is a decoded shard header.
type header struct {
	k, m, index uint8
	objectSize  uint64
	objectID    uint64
	objectCRC   uint32
	payloadCRC  uint32
}

// payloadLen returns the length of each shard's payload.
func (h header) payloadLen() int64 {
	if h.objectSize == 0 {
		return 0
	}
	return int64((h.objectSize + uint64(h.k) - 1) / uint64(h.k))
}

func (h header) encode() [headerSize]byte {
	var p [headerSize]byte
	copy(p[0:4], magic[:])
	p[4] = formatVersion
	p[5], p[6], p[7] = h.k, h.m, h.index
	binary.LittleEndian.PutUint64(p[8:], h.objectSize)
	binary.LittleEndian.PutUint64(p[16:], h.objectID)
	binary.LittleEndian.PutUint32(p[24:], h.objectCRC)
	binary.LittleEndian.PutUint32(p[28:], h.payloadCRC)
	binary.LittleEndian.PutUint32(p[32:], crc32.Checksum(p[:32], castagnoli))
	return p
}

// decodeHeader decodes and checks the header at the start of p. Any bytes
// are safe to pass: errors wrap ErrCorruptShard and never panic.
func decodeHeader(p []byte) (header, error) {
	if len(p) < headerSize {
		return header{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrCorruptShard, len(p), headerSize)
	}
	if [4]byte(p[0:4]) != magic {
		return header{}, fmt.Errorf("%w: bad magic %q", ErrCorruptShard, p[0:4])
	}
	if got, want := binary.LittleEndian.Uint32(p[32:]), crc32.Checksum(p[:32], castagnoli); got != want {
		return header{}, fmt.Errorf("%w: header CRC32C %08x, computed %08x", ErrCorruptShard, got, want)
	}
	if p[4] != formatVersion {
		return header{}, fmt.Errorf("%w: unknown format version %d", ErrCorruptShard, p[4])
	}
	h := header{
		k: p[5], m: p[6], index: p[7],
		objectSize: binary.LittleEndian.Uint64(p[8:]),
		objectID:   binary.LittleEndian.Uint64(p[16:]),
		objectCRC:  binary.LittleEndian.Uint32(p[24:]),
		payloadCRC: binary.LittleEndian.Uint32(p[28:]),
	}
	if h.k == 0 || int(h.k)+int(h.m) > 256 || int(h.index) >= int(h.k)+int(h.m) {
		return header{}, fmt.Errorf("%w: impossible geometry k=%d m=%d index=%d", ErrCorruptShard, h.k, h.m, h.index)
	}
	if h.objectSize > 1<<62 {
		return header{}, fmt.Errorf("%w: impossible object size %d", ErrCorruptShard, h.objectSize)
	}
	return h, nil
}

// decodeShard decodes a whole shard object and checks its payload.
func decodeShard(p []byte) (header, []byte, error) {
	h, err := decodeHeader(p)
	if err != nil {
		return header{}, nil, err
	}
	payload := p[headerSize:]
	if int64(len(payload)) != h.payloadLen() {
		return header{}, nil, fmt.Errorf("%w: payload of %d bytes, want %d", ErrCorruptShard, len(payload), h.payloadLen())
	}
	if got := crc32.Checksum(payload, castagnoli); got != h.payloadCRC {
		return header{}, nil, fmt.Errorf("%w: payload CRC32C %08x, header says %08x", ErrCorruptShard, got, h.payloadCRC)
	}
	return h, payload, nil
}

func crc32c(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }
