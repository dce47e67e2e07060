package ring

import (
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// AllocateTokens chooses Options.VNodes tokens for a new member id, given the
// ring as it stands. The choice is deterministic: the same ring and id always
// give the same tokens. If id is already on the ring with tokens, those are
// returned: tokens belong to an id for life.
//
// The allocator is greedy and replication-aware, in the spirit of
// Cassandra's allocator for a replication factor (CASSANDRA-7032). It places
// the new member's tokens one at a time. For every existing range it computes,
// exactly and locally, how splitting that range would change each member's
// primary share and its replica share at Options.ReplicationFactor (the new
// member enters the replica sets of the split range and of the ranges just
// before it, displacing their last replica). It then picks the split point
// that minimises a quadratic objective and takes the range whose split
// improves the objective most. The objective sums the squared deviations of
//
//   - every affected member's replica share from RF/N (weight 1),
//   - every affected member's primary share from 1/N (weight 4),
//   - the two new range sizes from the ideal 1/(number of tokens) (weight 1),
//
// where the new member's targets grow with each token it places (k/V of its
// full share after its k-th token), so that it takes its share in V even
// steps instead of grabbing large ranges first. Split points stay within the
// middle half of a range. The weights and the split bound were chosen by a
// sweep (docs/ring.md). The first member's tokens are evenly spaced from an
// offset derived from its id.
//
// Zones are not considered: the allocator balances the zone-oblivious
// placement. With zones of unequal size, zone-aware placement cannot be
// balanced by any token choice.
//
// NB: joins must be serialised (each joiner allocates from a ring that
// includes the previous joiner's tokens); two members allocating from the
// same ring would pick nearly the same positions.
func (r *Ring) AllocateTokens(id NodeID) ([]Token, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: empty id", ErrInvalidMember)
	}
	if i, ok := r.byID[id]; ok && len(r.members[i].Tokens) > 0 {
		return slices.Clone(r.members[i].Tokens), nil
	}
	return allocate(r.tokens, r.owner, len(r.members), id, r.opts.VNodes, r.opts.ReplicationFactor), nil
}

// allocate returns v new tokens for a new member given the sorted tokens and
// their owners (indexes below numNodes).
func allocate(tokens []Token, owner []int32, numNodes int, id NodeID, v, rf int) []Token {
	if len(tokens) == 0 {
		out := make([]Token, v)
		base := xxhash.Sum64String(string(id))
		step := ^uint64(0)/uint64(v) + 1 // 2^64 / v, rounded up
		if v == 1 {
			step = 0
		}
		for k := range out {
			out[k] = Token(base + uint64(k)*step)
		}
		slices.Sort(out)
		return out
	}
	a := newAllocator(tokens, owner, numNodes, v, rf)
	out := make([]Token, 0, v)
	for len(out) < v {
		a.yFrac = float64(len(out)+1) / float64(v)
		t, ok := a.placeBest()
		if !ok {
			break
		}
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// allocator is the state of one allocation. Node indexes are dense; the new
// member is index y. Shares are fractions of the token space.
type allocator struct {
	tok []Token
	own []int32
	y   int32
	rf  int
	// useRepl is false when every member replicates everything
	// (members+1 <= rf); then only the primary share matters.
	useRepl    bool
	repl, prim []float64
	tauR, tauP float64
	// yFrac is the fraction of its ideal share the new member should hold
	// after the token being placed: k/V for the k-th token.
	yFrac float64
	// tauTok is the ideal range size once the new member is placed.
	tauTok float64
	// scratch
	set, fwd, back []int32
	dr, dp         []lin
}

// lin is a load change a + b*l for one node, l being the length of the new
// member's new range.
type lin struct {
	node int32
	a, b float64
}

// primaryWeight weighs the primary-share term against the replica-share term
// in the objective. Primary balance matters for coordinators and for
// RF=1 keyspaces; replica balance is what the issue bounds.
const primaryWeight = 4.0

// rangeWeight weighs the range-size term of the objective.
const rangeWeight = 1.0

// minSplit keeps every split point at least this fraction away from either
// end of the range it splits, so that no range becomes a sliver that can
// never usefully be split again.
const minSplit = 1.0 / 4

func newAllocator(tokens []Token, owner []int32, numNodes, v, rf int) *allocator {
	n := numNodes + 1
	a := &allocator{
		tok:  slices.Clone(tokens),
		own:  slices.Clone(owner),
		y:    int32(numNodes),
		rf:   rf,
		repl: make([]float64, n),
		prim: make([]float64, n),
		tauP: 1 / float64(n),
	}
	// Count nodes that actually hold tokens: tokenless members do not count.
	placed := make([]bool, n)
	for _, o := range a.own {
		placed[o] = true
	}
	np := 1 // the new member
	for _, p := range placed[:numNodes] {
		if p {
			np++
		}
	}
	a.tauP = 1 / float64(np)
	a.tauTok = 1 / float64(len(a.tok)+v)
	a.useRepl = np > rf
	a.tauR = float64(rf) / float64(np)
	for i := range a.tok {
		l := a.length(i)
		a.prim[a.own[i]] += l
		if a.useRepl {
			a.set = a.distinctFrom(a.set[:0], i, rf)
			for _, m := range a.set {
				a.repl[m] += l
			}
		}
	}
	return a
}

// length returns the size of the range ending at tok[i] as a fraction of the
// token space.
func (a *allocator) length(i int) float64 {
	if len(a.tok) == 1 {
		return 1
	}
	return float64(uint64(a.tok[i]-a.tok[a.prev(i)])) * 0x1p-64
}

func (a *allocator) prev(i int) int {
	if i == 0 {
		return len(a.tok) - 1
	}
	return i - 1
}

// distinctFrom appends the first n distinct owners walking clockwise from
// index i.
func (a *allocator) distinctFrom(out []int32, i, n int) []int32 {
	for k := 0; k < len(a.tok) && len(out) < n; k++ {
		o := a.own[i]
		if !slices.Contains(out, o) {
			out = append(out, o)
		}
		if i++; i == len(a.tok) {
			i = 0
		}
	}
	return out
}

// evaluate scores putting a token of the new member inside the range ending
// at tok[i]. It returns the improvement of the objective, the length of the
// new member's new range, and false if the range cannot be split usefully.
// If apply is set it also applies the load changes for that length.
func (a *allocator) evaluate(i int, apply bool) (imp, l float64, ok bool) {
	if a.own[i] == a.y {
		return 0, 0, false
	}
	var span uint64
	if len(a.tok) > 1 {
		span = uint64(a.tok[i] - a.tok[a.prev(i)])
		if span < 4 {
			return 0, 0, false
		}
	}
	R := a.length(i)
	a.dr, a.dp = a.dr[:0], a.dp[:0]
	a.dp = addLin(a.dp, a.y, 0, 1)
	a.dp = addLin(a.dp, a.own[i], 0, -1)
	if a.useRepl {
		rf := a.rf
		a.fwd = a.distinctFrom(a.fwd[:0], i, 2*rf-1)
		// The new range (prev, p]: the new member joins its replica set
		// unless it is already there, pushing out the last replica.
		if !slices.Contains(a.fwd[:rf], a.y) {
			a.dr = addLin(a.dr, a.y, 0, 1)
			a.dr = addLin(a.dr, a.fwd[rf-1], 0, -1)
		}
		// Ranges before it whose replica walk now passes the new token.
		a.back = a.back[:0]
		j := i
		for k := 0; k < len(a.tok)-1; k++ {
			j = a.prev(j)
			o := a.own[j]
			if o == a.y {
				break
			}
			if !slices.Contains(a.back, o) {
				a.back = append(a.back, o)
			}
			if len(a.back) >= rf {
				break
			}
			// Old replica set: back plus the first rf-len(back) members of
			// fwd not in back. The new member displaces the last of them
			// unless it is among them.
			need := rf - len(a.back)
			var last int32 = -1
			hasY := false
			for _, f := range a.fwd {
				if need == 0 {
					break
				}
				if slices.Contains(a.back, f) {
					continue
				}
				need--
				last = f
				if f == a.y {
					hasY = true
				}
			}
			if hasY || last < 0 {
				continue
			}
			lj := a.length(j)
			a.dr = addLin(a.dr, a.y, lj, 0)
			a.dr = addLin(a.dr, last, -lj, 0)
		}
	}
	// Minimise sum_x w_x (c_x + a_x + b_x l)^2 over l in [lo, hi].
	num, den := 0.0, 0.0
	for _, d := range a.dr {
		c := a.repl[d.node] - a.target(d.node, a.tauR) + d.a
		num += d.b * c
		den += d.b * d.b
	}
	for _, d := range a.dp {
		c := a.prim[d.node] - a.target(d.node, a.tauP) + d.a
		num += primaryWeight * d.b * c
		den += primaryWeight * d.b * d.b
	}
	// Range-size term: the split range of size R becomes pieces l and R-l;
	// each should be close to the ideal range size s. Without it, regions of
	// large ranges are never split, because splitting one hands the new
	// member the replica share of its (also large) predecessors at once.
	s := a.tauTok
	num += rangeWeight * ((-s) - (R - s))
	den += rangeWeight * 2
	l = R / 2
	if den > 0 {
		l = -num / den
	}
	l = max(R*minSplit, min(R*(1-minSplit), l))
	for _, d := range a.dr {
		c := a.repl[d.node] - a.target(d.node, a.tauR)
		n := float64(c + d.a + d.b*l)
		imp += c*c - n*n
		if apply {
			a.repl[d.node] += d.a + d.b*l
		}
	}
	for _, d := range a.dp {
		c := a.prim[d.node] - a.target(d.node, a.tauP)
		n := float64(c + d.a + d.b*l)
		imp += primaryWeight * (c*c - n*n)
		if apply {
			a.prim[d.node] += d.a + d.b*l
		}
	}
	{
		p1, p2, old := l-s, R-l-s, R-s
		imp += rangeWeight * (old*old - float64(p1*p1) - float64(p2*p2))
	}
	return imp, l, true
}

// target returns node's ideal share given the ideal tau of a full member.
func (a *allocator) target(node int32, tau float64) float64 {
	if node == a.y {
		return tau * a.yFrac
	}
	return tau
}

// addLin merges a change for node into ds.
func addLin(ds []lin, node int32, da, db float64) []lin {
	for k := range ds {
		if ds[k].node == node {
			ds[k].a += da
			ds[k].b += db
			return ds
		}
	}
	return append(ds, lin{node, da, db})
}

// placeBest evaluates every range and splits the best one.
func (a *allocator) placeBest() (Token, bool) {
	best, bestImp := -1, 0.0
	for i := range a.tok {
		imp, _, ok := a.evaluate(i, false)
		if ok && (best < 0 || imp > bestImp) {
			best, bestImp = i, imp
		}
	}
	if best < 0 {
		return 0, false
	}
	return a.split(best), true
}

// split applies the best split of the range ending at tok[i] and returns the
// new token.
func (a *allocator) split(i int) Token {
	_, l, _ := a.evaluate(i, true)
	R := a.length(i)
	var t Token
	if len(a.tok) == 1 {
		t = a.tok[0] + Token(uint64(l*0x1p64))
	} else {
		span := uint64(a.tok[i] - a.tok[a.prev(i)])
		off := uint64(float64(span) * (l / R))
		off = max(1, min(span-1, off))
		t = a.tok[a.prev(i)] + Token(off)
	}
	at, _ := slices.BinarySearch(a.tok, t)
	a.tok = slices.Insert(a.tok, at, t)
	a.own = slices.Insert(a.own, at, a.y)
	return t
}
