package gossip

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/tierkv/tierkv/ring"
)

func sampleMeta() Meta {
	return Meta{
		ID: "n1", Zone: "us-east-1a", RPCAddr: "10.0.0.1:7000", HTTPAddr: "10.0.0.1:8080",
		State: ring.StateNormal, Generation: 42, ChangedAt: 1_700_000_000_123,
		Tokens:     []ring.Token{1, 1 << 40, ^ring.Token(0)},
		HasClockID: true, ClockID: 7,
	}
}

// encodeV1 is the version 1 encoding (before clock ids), as members of
// that version gossip it.
func encodeV1(m *Meta) []byte {
	b := []byte{metaVersion1, byte(m.State)}
	b = binary.AppendUvarint(b, m.Generation)
	b = binary.AppendVarint(b, m.ChangedAt)
	for _, s := range []string{string(m.ID), m.Zone, m.RPCAddr, m.HTTPAddr} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Tokens)))
	for _, t := range m.Tokens {
		b = binary.BigEndian.AppendUint64(b, uint64(t))
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// TestMetaClockID: the clock id round-trips (present, absent, 0 and the
// maximum), version 1 metadata still decodes (without a clock id), and a
// clock id byte out of range is corrupt.
func TestMetaClockID(t *testing.T) {
	for _, c := range []struct {
		has bool
		id  uint8
	}{{false, 0}, {true, 0}, {true, 1}, {true, MaxClockID}} {
		m := sampleMeta()
		m.HasClockID, m.ClockID = c.has, c.id
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Meta
		if err := got.UnmarshalBinary(b); err != nil || !got.Equal(&m) {
			t.Fatalf("%+v: round trip %+v, %v", c, got, err)
		}
	}
	m := sampleMeta()
	m.ClockID = MaxClockID + 1
	if _, err := m.MarshalBinary(); err == nil {
		t.Fatal("clock id 64 encoded")
	}
	// Version 1: no clock id.
	m = sampleMeta()
	var got Meta
	if err := got.UnmarshalBinary(encodeV1(&m)); err != nil {
		t.Fatal(err)
	}
	m.HasClockID, m.ClockID = false, 0
	if !got.Equal(&m) {
		t.Fatalf("version 1: %+v != %+v", got, m)
	}
	// A clock id byte in (63, 0xff) is corrupt, even with a good CRC.
	m = sampleMeta()
	b, _ := m.MarshalBinary()
	b = b[:len(b)-4]
	b[2] = 64
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	if err := got.UnmarshalBinary(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("clock id 64: %v", err)
	}
}

func TestMetaRoundTrip(t *testing.T) {
	m := sampleMeta()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Meta
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !got.Equal(&m) {
		t.Fatalf("round trip: %+v != %+v", got, m)
	}
	// The largest metadata fits memberlist's 512 bytes.
	big := Meta{
		ID: ring.NodeID(strings.Repeat("i", MaxIDLen)), Zone: strings.Repeat("z", MaxZoneLen),
		RPCAddr: strings.Repeat("r", MaxAddrLen), HTTPAddr: strings.Repeat("h", MaxAddrLen),
		State: ring.StateLeaving, Generation: ^uint64(0), ChangedAt: -1 << 63,
		Tokens: make([]ring.Token, MaxTokens), HasClockID: true, ClockID: MaxClockID,
	}
	if b, err := big.MarshalBinary(); err != nil || len(b) > 512 {
		t.Fatalf("largest meta: %d bytes, %v", len(b), err)
	}
	// Every single-byte corruption and every truncation is detected.
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x40
		if err := got.UnmarshalBinary(c); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flip at %d: %v", i, err)
		}
		if err := got.UnmarshalBinary(b[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: %v", i, err)
		}
	}
	// Invalid metadata is refused on encode.
	for _, bad := range []Meta{
		{ID: "", State: ring.StateNormal},
		{ID: "x", State: 0},
		{ID: "x", State: ring.StateNormal, Tokens: make([]ring.Token, MaxTokens+1)},
		{ID: "x", State: ring.StateNormal, Zone: strings.Repeat("z", MaxZoneLen+1)},
	} {
		if _, err := bad.MarshalBinary(); err == nil {
			t.Errorf("%+v: expected error", bad)
		}
	}
}

func TestHeartbeatRoundTrip(t *testing.T) {
	h := heartbeat{Kind: msgHeartbeat, ID: "n7", Generation: 3, Seq: 99}
	got, err := decodeHeartbeat(appendHeartbeat(nil, h))
	if err != nil || got != h {
		t.Fatalf("%+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, {3}, {2}, {msgHeartbeat}, {msgHeartbeat, 1, 1, 0}, append(appendHeartbeat(nil, h), 0)} {
		if _, err := decodeHeartbeat(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%x: %v", bad, err)
		}
	}
}

// FuzzMeta checks that decoding gossiped metadata never panics and that
// whatever decodes re-encodes to the same bytes.
func FuzzMeta(f *testing.F) {
	m := sampleMeta()
	b, _ := m.MarshalBinary()
	f.Add(b)
	f.Add([]byte{})
	f.Add(b[:len(b)-4])
	f.Add(encodeV1(&m)) // version 1 (no clock id) re-encodes as version 2
	m.HasClockID = false
	b, _ = m.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Meta
		if err := m.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		re, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded meta does not re-encode: %v", err)
		}
		var m2 Meta
		if err := m2.UnmarshalBinary(re); err != nil || !m2.Equal(&m) {
			t.Fatalf("re-encoded meta differs: %v", err)
		}
	})
}

// FuzzHeartbeat checks that decoding gossiped heartbeats never panics and
// that whatever decodes re-encodes to the same bytes.
func FuzzHeartbeat(f *testing.F) {
	f.Add(appendHeartbeat(nil, heartbeat{Kind: msgHeartbeat, ID: "n1", Generation: 1, Seq: 2}))
	f.Add(appendHeartbeat(nil, heartbeat{Kind: msgLeft, ID: "n1", Generation: 1}))
	f.Add([]byte{msgHeartbeat, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeartbeat(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		h2, err := decodeHeartbeat(appendHeartbeat(nil, h))
		if err != nil || h2 != h {
			t.Fatalf("re-encode: %+v %v", h2, err)
		}
	})
}

// FuzzState checks that decoding a push/pull state never panics and that
// whatever decodes re-encodes to something that decodes the same.
func FuzzState(f *testing.F) {
	f.Add(appendState(nil, []heartbeat{{Kind: msgLeft, ID: "a", Generation: 9}, {Kind: msgLeft, ID: "bb", Generation: 1}}))
	f.Add([]byte{0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		hs, err := decodeState(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		hs2, err := decodeState(appendState(nil, hs))
		if err != nil || len(hs2) != len(hs) {
			t.Fatalf("re-encode: %v", err)
		}
		for i := range hs {
			if hs[i] != hs2[i] {
				t.Fatalf("entry %d differs", i)
			}
		}
	})
}
