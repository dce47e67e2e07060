package antientropy

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tierkv/tierkv/ring"
)

// TestLeafOf pins the token → leaf mapping (part of the replica protocol).
func TestLeafOf(t *testing.T) {
	const max = ring.Token(math.MaxUint64)
	cases := []struct {
		r     ring.Range
		depth int
		tok   ring.Token
		want  int
	}{
		// (10, 26]: 16 tokens, 4 leaves of 4.
		{ring.Range{Start: 10, End: 26}, 2, 11, 0},
		{ring.Range{Start: 10, End: 26}, 2, 14, 0},
		{ring.Range{Start: 10, End: 26}, 2, 15, 1},
		{ring.Range{Start: 10, End: 26}, 2, 26, 3},
		// Depth 0: one leaf.
		{ring.Range{Start: 10, End: 26}, 0, 26, 0},
		// Whole ring from 0: token 1 is first, token 0 last.
		{ring.Range{Start: 0, End: 0}, 3, 1, 0},
		{ring.Range{Start: 0, End: 0}, 3, 0, 7},
		{ring.Range{Start: 0, End: 0}, 3, 1 << 63, 3},
		{ring.Range{Start: 0, End: 0}, 3, 1<<63 + 1, 4},
		// Wrapping (max-3, 4]: 8 tokens max-2, max-1, max, 0, 1, 2, 3, 4.
		{ring.Range{Start: max - 3, End: 4}, 1, max - 2, 0},
		{ring.Range{Start: max - 3, End: 4}, 1, 0, 0},
		{ring.Range{Start: max - 3, End: 4}, 1, 1, 1},
		{ring.Range{Start: max - 3, End: 4}, 1, 4, 1},
		// Smaller than the number of leaves: leaves are skipped.
		{ring.Range{Start: 0, End: 2}, 4, 1, 0},
		{ring.Range{Start: 0, End: 2}, 4, 2, 8},
	}
	for _, c := range cases {
		if got := LeafOf(c.r, c.depth, c.tok); got != c.want {
			t.Errorf("LeafOf(%v, %d, %d) = %d, want %d", c.r, c.depth, c.tok, got, c.want)
		}
	}
}

// TestLeafOfProperties: leaves are in bounds, monotonic along the range and
// of nearly equal size.
func TestLeafOfProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for range 200 {
		r := ring.Range{Start: ring.Token(rng.Uint64()), End: ring.Token(rng.Uint64())}
		depth := rng.IntN(MaxDepth + 1)
		size := uint64(r.End - r.Start) // 0 = whole ring
		prev := -1
		for i := range 64 {
			// Offsets spread over the range, increasing.
			off := uint64(float64(i) / 64 * float64(size-1))
			if size == 0 {
				off = uint64(i) << 58
			}
			tok := r.Start + 1 + ring.Token(off)
			if !r.Contains(tok) {
				t.Fatalf("%v does not contain %d", r, tok)
			}
			lf := LeafOf(r, depth, tok)
			if lf < 0 || lf >= 1<<depth || lf < prev {
				t.Fatalf("LeafOf(%v, %d, %d) = %d after %d", r, depth, tok, lf, prev)
			}
			prev = lf
		}
		if size > 1<<depth {
			if got := LeafOf(r, depth, r.End); got != 1<<depth-1 {
				t.Fatalf("last token of %v at depth %d in leaf %d", r, depth, got)
			}
		}
	}
}

// TestTreeOrderIndependent: a tree does not depend on the order entries are
// added in, and any change of an entry changes the root.
func TestTreeOrderIndependent(t *testing.T) {
	r := ring.Range{Start: 0, End: 0}
	type ent struct {
		key string
		ver uint64
		del bool
		vh  uint64
	}
	var es []ent
	for i := range 300 {
		es = append(es, ent{key: string(rune('a'+i%26)) + string(rune('A'+i/26)), ver: uint64(i + 1), vh: uint64(i * 7)})
	}
	build := func(es []ent) *Tree {
		tr := newTree(r, 6)
		for _, e := range es {
			tr.add(ring.KeyToken([]byte(e.key)), EntryHash([]byte(e.key), e.ver, e.del, e.vh))
		}
		tr.finish()
		return tr
	}
	base := build(es).Root()
	shuffled := append([]ent(nil), es...)
	rand.New(rand.NewPCG(2, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if build(shuffled).Root() != base {
		t.Fatal("root depends on insertion order")
	}
	for i, mut := range []func(*ent){
		func(e *ent) { e.ver++ },
		func(e *ent) { e.del = true },
		func(e *ent) { e.vh++ },
		func(e *ent) { e.key += "x" },
	} {
		m := append([]ent(nil), es...)
		mut(&m[17])
		if build(m).Root() == base {
			t.Errorf("mutation %d does not change the root", i)
		}
	}
	if build(es[1:]).Root() == base {
		t.Error("a missing entry does not change the root")
	}
}

// TestEntryHashContract pins EntryHash (part of the replica protocol).
func TestEntryHashContract(t *testing.T) {
	got := EntryHash([]byte("k"), 1, false, 2)
	// XXH64(0x01 'k' 01 00 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00).
	b := []byte{1, 'k', 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}
	if want := uint64(ring.KeyToken(b)); got != want {
		t.Fatalf("EntryHash = %#x, want %#x", got, want)
	}
}
