package ring

import (
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// NodeID identifies a member for its whole life. Tokens belong to a NodeID, so
// a replacement node that reuses a dead node's id takes over its ranges.
type NodeID string

// Token is a position on the ring, a 64-bit unsigned integer. The ring wraps
// from the largest token back to 0.
type Token uint64

// KeyToken returns the token of key: its 64-bit xxHash (XXH64, seed 0).
//
// NB: this function is part of the placement contract. Clients and servers
// must compute it identically; do not change it.
func KeyToken(key []byte) Token {
	return Token(xxhash.Sum64(key))
}

// State is the lifecycle state of a member.
type State uint8

const (
	// StateJoining is a member that has chosen its tokens and is streaming
	// data in. It is placed on the ring.
	StateJoining State = 1
	// StateNormal is a member that serves its ranges.
	StateNormal State = 2
	// StateLeaving is a member that is streaming its ranges away before it
	// leaves. It is still placed on the ring.
	StateLeaving State = 3
	// StateLeft is a member that has left for good. It is not placed on the
	// ring; its tokens are free.
	StateLeft State = 4
)

// String returns the state's name in upper case, as in the issue tracker and
// the logs.
func (s State) String() string {
	switch s {
	case StateJoining:
		return "JOINING"
	case StateNormal:
		return "NORMAL"
	case StateLeaving:
		return "LEAVING"
	case StateLeft:
		return "LEFT"
	default:
		return fmt.Sprintf("State(%d)", uint8(s))
	}
}

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool { return s >= StateJoining && s <= StateLeft }

// Member is a node as the ring sees it.
type Member struct {
	// ID is the member's permanent identity. It must not be empty.
	ID NodeID
	// Zone is the failure domain (availability zone, rack). Preference lists
	// spread over distinct zones first. The empty string is a zone like any
	// other.
	Zone string
	// State is the member's lifecycle state. Members in StateLeft are not
	// placed. The zero value is treated as StateNormal.
	State State
	// Tokens are the member's ring positions, chosen by Ring.AllocateTokens
	// when the member first joined. They need not be sorted.
	Tokens []Token
}

// Range is the half-open token range (Start, End]: a key belongs to it when
// its token t satisfies Start < t <= End, wrapping around 2^64 when
// End <= Start. A Range with Start == End is the whole ring.
type Range struct {
	// Start is the exclusive lower bound.
	Start Token
	// End is the inclusive upper bound.
	End Token
}

// Contains reports whether token t falls in r.
func (r Range) Contains(t Token) bool {
	switch {
	case r.Start == r.End:
		return true
	case r.Start < r.End:
		return r.Start < t && t <= r.End
	default: // wraps
		return t > r.Start || t <= r.End
	}
}

// Size returns the fraction of the token space the range covers, in (0, 1].
func (r Range) Size() float64 {
	if r.Start == r.End {
		return 1
	}
	return float64(uint64(r.End-r.Start)) * 0x1p-64
}

// String formats the range as (start, end].
func (r Range) String() string {
	return fmt.Sprintf("(%#016x, %#016x]", uint64(r.Start), uint64(r.End))
}
