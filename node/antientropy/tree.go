package antientropy

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"

	"github.com/cespare/xxhash/v2"

	"github.com/tierkv/tierkv/ring"
)

// NodeIndex names a node of a Merkle tree in heap order: the root is 0 and
// the children of node i are 2i+1 and 2i+2. The leaves of a tree of depth d
// are the nodes 2^d-1 ... 2^(d+1)-2, leaf j being node 2^d-1+j.
type NodeIndex uint32

// Tree is the Merkle tree of one token range at a given depth. A Tree is
// immutable once built and safe for concurrent reads.
//
// The leaves split the range (Start, End] into 2^depth equal token
// sub-ranges (LeafOf). A leaf's hash is the sum, modulo 2^64, of the
// EntryHash of every key whose token falls in it, so it does not depend on
// the order in which keys are visited (the engine iterates in key order, not
// token order); an empty leaf hashes to 0. An inner node's hash is
// XXH64(left || right), both children as little-endian uint64.
//
// NB: EntryHash, LeafOf and the inner-node hash are part of the replica
// protocol: every node must compute them identically.
type Tree struct {
	r     ring.Range
	depth int
	nodes []uint64
}

func newTree(r ring.Range, depth int) *Tree {
	return &Tree{r: r, depth: depth, nodes: make([]uint64, (2<<depth)-1)}
}

// Range returns the token range the tree covers.
func (t *Tree) Range() ring.Range { return t.r }

// Depth returns the tree's depth: it has 2^depth leaves.
func (t *Tree) Depth() int { return t.depth }

// Root returns the root hash.
func (t *Tree) Root() uint64 { return t.nodes[0] }

// NumNodes returns the number of nodes, 2^(depth+1)-1.
func (t *Tree) NumNodes() int { return len(t.nodes) }

// Hash returns the hash of node i; ok is false when i is out of range.
func (t *Tree) Hash(i NodeIndex) (h uint64, ok bool) {
	if int(i) >= len(t.nodes) {
		return 0, false
	}
	return t.nodes[i], true
}

// leafBase is the NodeIndex of leaf 0.
func (t *Tree) leafBase() int { return (1 << t.depth) - 1 }

// add adds an entry hash to the leaf of token tok.
// REQUIRES: t.r.Contains(tok).
func (t *Tree) add(tok ring.Token, h uint64) {
	t.nodes[t.leafBase()+LeafOf(t.r, t.depth, tok)] += h
}

// finish computes the inner nodes from the leaves.
func (t *Tree) finish() {
	for i := t.leafBase() - 1; i >= 0; i-- {
		t.nodes[i] = innerHash(t.nodes[2*i+1], t.nodes[2*i+2])
	}
}

func innerHash(l, r uint64) uint64 {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], l)
	binary.LittleEndian.PutUint64(b[8:], r)
	return xxhash.Sum64(b[:])
}

// LeafOf returns the leaf, in [0, 2^depth), of token tok in a tree of range
// r: with offset = tok-Start-1 (mod 2^64) and size = End-Start (mod 2^64,
// 2^64 for the whole ring), leaf = floor(offset × 2^depth / size).
// REQUIRES: r.Contains(tok), 0 <= depth <= MaxDepth.
func LeafOf(r ring.Range, depth int, tok ring.Token) int {
	off := uint64(tok - r.Start - 1)
	if depth == 0 {
		return 0
	}
	if r.Start == r.End {
		return int(off >> (64 - depth))
	}
	size := uint64(r.End - r.Start)
	// INVARIANT: off < size, so hi < size and Div64 does not panic.
	hi, lo := bits.Mul64(off, 1<<depth)
	q, _ := bits.Div64(hi, lo, size)
	return int(q)
}

// EntryHash is the hash a key's newest version contributes to its leaf:
//
//	XXH64( uvarint(len(key)) | key | version (u64 LE) | deleted (1 byte, 0 or 1) | XXH64(value) (u64 LE) )
//
// A tombstone has a nil value (XXH64 of the empty string).
func EntryHash(key []byte, version uint64, deleted bool, valueHash uint64) uint64 {
	var d xxhash.Digest
	d.Reset()
	var b [binary.MaxVarintLen64 + 17]byte
	n := binary.PutUvarint(b[:], uint64(len(key)))
	_, _ = d.Write(b[:n])
	_, _ = d.Write(key)
	binary.LittleEndian.PutUint64(b[0:8], version)
	if deleted {
		b[8] = 1
	} else {
		b[8] = 0
	}
	binary.LittleEndian.PutUint64(b[9:17], valueHash)
	_, _ = d.Write(b[:17])
	return d.Sum64()
}

// rangeIndex finds, among disjoint ranges, the one holding a token.
type rangeIndex struct {
	ranges []ring.Range
	byEnd  []int // indexes into ranges, sorted by End
	wrap   int   // index of the range that wraps (Start >= End), or -1
}

func newRangeIndex(ranges []ring.Range) *rangeIndex {
	ri := &rangeIndex{ranges: ranges, wrap: -1}
	for i, r := range ranges {
		if r.Start >= r.End {
			ri.wrap = i
			continue
		}
		ri.byEnd = append(ri.byEnd, i)
	}
	slices.SortFunc(ri.byEnd, func(a, b int) int { return cmp.Compare(ranges[a].End, ranges[b].End) })
	return ri
}

// find returns the index of the range holding tok, or -1.
func (ri *rangeIndex) find(tok ring.Token) int {
	lo, hi := 0, len(ri.byEnd)
	for lo < hi {
		m := (lo + hi) / 2
		if ri.ranges[ri.byEnd[m]].End >= tok {
			hi = m
		} else {
			lo = m + 1
		}
	}
	if lo < len(ri.byEnd) && ri.ranges[ri.byEnd[lo]].Contains(tok) {
		return ri.byEnd[lo]
	}
	if ri.wrap >= 0 && ri.ranges[ri.wrap].Contains(tok) {
		return ri.wrap
	}
	return -1
}

// validateRanges checks that ranges are disjoint and not empty of meaning: a
// whole-ring range (Start == End) must be alone.
func validateRanges(ranges []ring.Range) error {
	if len(ranges) == 0 {
		return nil
	}
	var plain []ring.Range
	wraps := 0
	for _, r := range ranges {
		if r.Start == r.End && len(ranges) > 1 {
			return fmt.Errorf("%w: whole-ring range %v with others", ErrInvalidRanges, r)
		}
		if r.Start > r.End {
			wraps++
			continue
		}
		plain = append(plain, r)
	}
	if wraps > 1 {
		return fmt.Errorf("%w: %d ranges wrap around the ring", ErrInvalidRanges, wraps)
	}
	slices.SortFunc(plain, func(a, b ring.Range) int { return cmp.Compare(a.Start, b.Start) })
	for i := 1; i < len(plain); i++ {
		if plain[i].Start < plain[i-1].End {
			return fmt.Errorf("%w: %v overlaps %v", ErrInvalidRanges, plain[i], plain[i-1])
		}
	}
	if wraps == 1 {
		for _, w := range ranges {
			if w.Start > w.End {
				for _, r := range plain {
					if r.End > w.Start || r.Start < w.End {
						return fmt.Errorf("%w: %v overlaps %v", ErrInvalidRanges, r, w)
					}
				}
			}
		}
	}
	return nil
}
