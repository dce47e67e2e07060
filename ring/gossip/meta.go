package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/tierkv/tierkv/ring"
)

// Meta is what a member gossips about itself: memberlist carries it as the
// node's metadata (at most memberlist.MetaMaxSize = 512 bytes encoded), so a
// change reaches every member with memberlist's alive messages.
type Meta struct {
	// ID is the member's permanent identity and its memberlist node name.
	ID ring.NodeID
	// Zone is the failure domain used for replica placement.
	Zone string
	// RPCAddr is the internode gRPC address (host:port).
	RPCAddr string
	// HTTPAddr is the client HTTP address (host:port).
	HTTPAddr string
	// State is the lifecycle state.
	State ring.State
	// Generation increases every time the member's process starts (the
	// node layer persists it). Heartbeats of an older generation are
	// ignored.
	Generation uint64
	// ChangedAt is the originator's wall clock, in Unix milliseconds, when
	// State last changed. Receivers use it to measure how long the change
	// took to reach them.
	ChangedAt int64
	// Tokens are the member's ring tokens, empty until it has allocated
	// them.
	Tokens []ring.Token
	// HasClockID says whether the member has a clock id (members of format
	// version 1, and new members until they picked one, have none).
	HasClockID bool
	// ClockID is the member's cluster-unique index in [0, MaxClockID]: the
	// node layer stamps it in the low bits of every version (the HLC
	// tie-break). Like tokens, it belongs to the member's id.
	ClockID uint8
}

// Limits on metadata fields; together with MaxTokens they keep an encoded
// Meta within memberlist's 512-byte limit.
const (
	// MaxIDLen bounds Meta.ID.
	MaxIDLen = 64
	// MaxZoneLen bounds Meta.Zone.
	MaxZoneLen = 32
	// MaxAddrLen bounds Meta.RPCAddr and Meta.HTTPAddr.
	MaxAddrLen = 64
	// MaxTokens bounds len(Meta.Tokens).
	MaxTokens = 32
	// MaxClockID bounds Meta.ClockID (6 bits).
	MaxClockID = 63
)

// Format constants. NB: part of the wire format; do not change.
const (
	metaVersion1  = 1 // no clock id byte
	metaVersion   = 2
	noClockID     = 0xff // the clock id byte of a member without one
	msgHeartbeat  = 1
	msgLeft       = 2
	maxMetaSize   = 512 // memberlist.MetaMaxSize
	crcSize       = 4
	heartbeatSize = 1 + binary.MaxVarintLen64*2 + 1 + MaxIDLen
)

// ErrCorrupt is returned (wrapped) for gossiped bytes that do not decode.
var ErrCorrupt = errors.New("gossip: corrupt message")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Validate checks m's fields against the limits.
func (m *Meta) Validate() error {
	switch {
	case m.ID == "" || len(m.ID) > MaxIDLen:
		return fmt.Errorf("gossip: id %q: length must be in [1, %d]", m.ID, MaxIDLen)
	case len(m.Zone) > MaxZoneLen:
		return fmt.Errorf("gossip: zone %q longer than %d", m.Zone, MaxZoneLen)
	case len(m.RPCAddr) > MaxAddrLen || len(m.HTTPAddr) > MaxAddrLen:
		return fmt.Errorf("gossip: address longer than %d", MaxAddrLen)
	case !m.State.Valid():
		return fmt.Errorf("gossip: invalid state %v", m.State)
	case len(m.Tokens) > MaxTokens:
		return fmt.Errorf("gossip: %d tokens, at most %d fit in the metadata", len(m.Tokens), MaxTokens)
	case m.HasClockID && m.ClockID > MaxClockID:
		return fmt.Errorf("gossip: clock id %d above %d", m.ClockID, MaxClockID)
	}
	return nil
}

// MarshalBinary encodes m (format version 2):
//
//	+---------+-------+----------+------------------+-----------------+
//	| version | state | clock id | generation uvar  | changedAt varint|
//	|   u8=2  |  u8   | u8 (*)   |                  |                 |
//	+---------+-------+----------+------------------+-----------------+
//	| id, zone, rpc, http: uvarint length + bytes each      |
//	+------------------------------------------------------+
//	| token count uvarint | tokens, 8 bytes big-endian each |
//	+------------------------------------------------------+
//	| CRC-32C of everything above, 4 bytes big-endian       |
//	+------------------------------------------------------+
//
// (*) 0..MaxClockID, or 0xFF for none. Version 1 is the same without the
// clock id byte; UnmarshalBinary reads both (a version 1 member has no
// clock id). The largest metadata is 512 bytes, memberlist's limit.
//
// NB: part of the wire format; a change needs a new version byte.
func (m *Meta) MarshalBinary() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 128+8*len(m.Tokens))
	clock := byte(noClockID)
	if m.HasClockID {
		clock = m.ClockID
	}
	b = append(b, metaVersion, byte(m.State), clock)
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
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	if len(b) > maxMetaSize {
		return nil, fmt.Errorf("gossip: encoded metadata is %d bytes, memberlist allows %d", len(b), maxMetaSize)
	}
	return b, nil
}

// decoder reads fields and remembers the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) byte(what string) byte {
	if len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint(what string) uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str(what string, maxLen int) string {
	n := d.uvarint(what)
	if n > uint64(maxLen) || n > uint64(len(d.b)) {
		d.fail(what)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// UnmarshalBinary decodes b into m. Bad input returns an error wrapping
// ErrCorrupt and never panics; m is only written on success.
func (m *Meta) UnmarshalBinary(b []byte) error {
	if len(b) < 2+crcSize || len(b) > maxMetaSize {
		return fmt.Errorf("%w: metadata length %d", ErrCorrupt, len(b))
	}
	body := b[:len(b)-crcSize]
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(b[len(body):]) {
		return fmt.Errorf("%w: metadata checksum mismatch", ErrCorrupt)
	}
	d := decoder{b: body}
	v := d.byte("version")
	if v != metaVersion && v != metaVersion1 {
		return fmt.Errorf("%w: unknown metadata version %d", ErrCorrupt, v)
	}
	var out Meta
	out.State = ring.State(d.byte("state"))
	if v >= metaVersion {
		switch c := d.byte("clock id"); {
		case c == noClockID:
		case c <= MaxClockID:
			out.HasClockID, out.ClockID = true, c
		default:
			d.fail("clock id")
		}
	}
	out.Generation = d.uvarint("generation")
	out.ChangedAt = d.varint("changedAt")
	out.ID = ring.NodeID(d.str("id", MaxIDLen))
	out.Zone = d.str("zone", MaxZoneLen)
	out.RPCAddr = d.str("rpc address", MaxAddrLen)
	out.HTTPAddr = d.str("http address", MaxAddrLen)
	n := d.uvarint("token count")
	if n > MaxTokens || n*8 != uint64(len(d.b)) {
		d.fail("token count")
	}
	if d.err != nil {
		return d.err
	}
	out.Tokens = make([]ring.Token, n)
	for i := range out.Tokens {
		out.Tokens[i] = ring.Token(binary.BigEndian.Uint64(d.b[8*i:]))
	}
	if err := out.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	*m = out
	return nil
}

// Equal reports whether m and o are identical.
func (m *Meta) Equal(o *Meta) bool {
	return m.ID == o.ID && m.Zone == o.Zone && m.RPCAddr == o.RPCAddr && m.HTTPAddr == o.HTTPAddr &&
		m.State == o.State && m.Generation == o.Generation && m.ChangedAt == o.ChangedAt &&
		slices.Equal(m.Tokens, o.Tokens) && m.HasClockID == o.HasClockID && m.ClockID == o.ClockID
}

// heartbeat is a gossiped message about a member, re-gossiped once by every
// receiver that finds it news. Kind msgHeartbeat: the member is alive; the
// receivers feed the phi detector with its arrival times. Kind msgLeft: the
// member (up to this generation) left the cluster; it is a tombstone that
// makes the leave reach members that saw the leaver fail first.
type heartbeat struct {
	Kind       byte
	ID         ring.NodeID
	Generation uint64
	Seq        uint64
}

// appendHeartbeat encodes h: kind byte (1 heartbeat, 2 left), generation
// uvarint, seq uvarint, id length uvarint, id bytes. Memberlist checksums
// packets (and encrypts them when a keyring is set); a corrupt message is
// rejected by the kind, length and id checks.
//
// NB: part of the wire format.
func appendHeartbeat(b []byte, h heartbeat) []byte {
	b = append(b, h.Kind)
	b = binary.AppendUvarint(b, h.Generation)
	b = binary.AppendUvarint(b, h.Seq)
	b = binary.AppendUvarint(b, uint64(len(h.ID)))
	return append(b, h.ID...)
}

// decodeHeartbeat decodes a heartbeat message. Bad input returns an error
// wrapping ErrCorrupt and never panics.
func decodeHeartbeat(b []byte) (heartbeat, error) {
	d := decoder{b: b}
	var h heartbeat
	h.Kind = d.byte("message type")
	if d.err == nil && h.Kind != msgHeartbeat && h.Kind != msgLeft {
		return heartbeat{}, fmt.Errorf("%w: unknown message type %d", ErrCorrupt, h.Kind)
	}
	h.Generation = d.uvarint("generation")
	h.Seq = d.uvarint("seq")
	h.ID = ring.NodeID(d.str("id", MaxIDLen))
	if d.err == nil && (h.ID == "" || len(d.b) != 0) {
		d.fail("heartbeat id or trailing bytes")
	}
	if d.err != nil {
		return heartbeat{}, d.err
	}
	return h, nil
}

// maxStateEntries bounds the tombstones in one push/pull state.
const maxStateEntries = 1 << 16

// appendState encodes the push/pull state: a uvarint count of messages, then
// each message as a uvarint length and its bytes.
func appendState(b []byte, msgs []heartbeat) []byte {
	b = binary.AppendUvarint(b, uint64(len(msgs)))
	for _, h := range msgs {
		m := appendHeartbeat(nil, h)
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
	}
	return b
}

// decodeState decodes a push/pull state. Bad input returns an error wrapping
// ErrCorrupt and never panics.
func decodeState(b []byte) ([]heartbeat, error) {
	d := decoder{b: b}
	n := d.uvarint("state count")
	if n > maxStateEntries || n > uint64(len(d.b)) {
		d.fail("state count")
	}
	var out []heartbeat
	for i := uint64(0); i < n && d.err == nil; i++ {
		l := d.uvarint("state entry length")
		if l > uint64(len(d.b)) {
			d.fail("state entry length")
			break
		}
		h, err := decodeHeartbeat(d.b[:l])
		if err != nil {
			return nil, err
		}
		out = append(out, h)
		d.b = d.b[l:]
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("state trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return out, nil
}
