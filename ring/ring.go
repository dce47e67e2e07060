package ring

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// ErrDuplicateMember is returned when two members share an id.
var ErrDuplicateMember = errors.New("ring: duplicate member id")

// ErrInvalidMember is returned for a member with an empty id or an unknown
// state.
var ErrInvalidMember = errors.New("ring: invalid member")

// ErrTokenConflict is returned by Add when a new member's token is already
// owned by another member.
var ErrTokenConflict = errors.New("ring: token already owned")

// Ring is an immutable token ring. All methods are safe for concurrent use;
// Add and Remove return a new Ring and leave the receiver unchanged, so a
// reader can hold a *Ring snapshot (typically behind an atomic.Pointer) while
// the membership layer builds the next one.
type Ring struct {
	opts Options
	// members are the placed and unplaced (tokenless) members, sorted by ID.
	// StateLeft members are not kept.
	members []Member
	byID    map[NodeID]int32
	// tokens is sorted ascending; owner[i] is the index in members of the
	// member owning tokens[i].
	tokens []Token
	owner  []int32
	// zoneOf[m] is the dense zone number of members[m].
	zoneOf []int32
	// numPlaced is the number of members with at least one token, numZones
	// the number of distinct zones among them.
	numPlaced int
	numZones  int
	// prefN = min(ReplicationFactor, numPlaced). pref[i*prefN:(i+1)*prefN] is
	// the preference list (member indexes) for keys in the range ending at
	// tokens[i].
	prefN int
	pref  []int32
}

// New returns a ring of the given members. opts may be nil; it is copied.
// Members in StateLeft are dropped. Members without tokens are known to the
// ring but own nothing.
//
// Two members must not claim the same token; the allocator never produces
// such a ring, but concurrent joins or a bug elsewhere could. Rather than fail
// on gossiped input, New resolves a conflict deterministically: the member
// with the smaller id keeps the token and the other member's copy is ignored.
// Use Conflicts to detect this.
func New(opts *Options, members ...Member) (*Ring, error) {
	o := *opts.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	ms := make([]Member, 0, len(members))
	for _, m := range members {
		if m.ID == "" {
			return nil, fmt.Errorf("%w: empty id", ErrInvalidMember)
		}
		if m.State == 0 {
			m.State = StateNormal
		}
		if !m.State.Valid() {
			return nil, fmt.Errorf("%w: %q has state %v", ErrInvalidMember, m.ID, m.State)
		}
		if m.State == StateLeft {
			continue
		}
		m.Tokens = slices.Clone(m.Tokens)
		slices.Sort(m.Tokens)
		m.Tokens = slices.Compact(m.Tokens)
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	for i := 1; i < len(ms); i++ {
		if ms[i].ID == ms[i-1].ID {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateMember, ms[i].ID)
		}
	}
	return build(o, ms), nil
}

// build indexes ms, which must be sorted by id, valid and owned by the ring.
func build(o Options, ms []Member) *Ring {
	r := &Ring{opts: o, members: ms, byID: make(map[NodeID]int32, len(ms))}
	total := 0
	for i, m := range ms {
		r.byID[m.ID] = int32(i)
		total += len(m.Tokens)
	}
	type tokOwner struct {
		t Token
		o int32
	}
	all := make([]tokOwner, 0, total)
	for i, m := range ms {
		for _, t := range m.Tokens {
			all = append(all, tokOwner{t, int32(i)})
		}
	}
	// Members are sorted by id, so on a tie the smaller id sorts first and
	// keeps the token.
	slices.SortStableFunc(all, func(a, b tokOwner) int { return cmp.Compare(a.t, b.t) })
	r.tokens = make([]Token, 0, len(all))
	r.owner = make([]int32, 0, len(all))
	for i, to := range all {
		if i > 0 && to.t == all[i-1].t {
			continue
		}
		r.tokens = append(r.tokens, to.t)
		r.owner = append(r.owner, to.o)
	}
	zones := make(map[string]int32)
	r.zoneOf = make([]int32, len(ms))
	placed := make([]bool, len(ms))
	for _, o := range r.owner {
		placed[o] = true
	}
	for i, m := range ms {
		if !placed[i] {
			r.zoneOf[i] = -1
			continue
		}
		r.numPlaced++
		z, ok := zones[m.Zone]
		if !ok {
			z = int32(len(zones))
			zones[m.Zone] = z
		}
		r.zoneOf[i] = z
	}
	r.numZones = len(zones)
	r.prefN = min(o.ReplicationFactor, r.numPlaced)
	r.pref = make([]int32, len(r.tokens)*r.prefN)
	for i := range r.tokens {
		r.walk(r.pref[i*r.prefN:i*r.prefN:(i+1)*r.prefN], i, r.prefN)
	}
	return r
}

// Options returns a copy of the ring's options.
func (r *Ring) Options() Options { return r.opts }

// Len returns the number of members the ring knows, placed or not.
func (r *Ring) Len() int { return len(r.members) }

// NumTokens returns the number of tokens on the ring.
func (r *Ring) NumTokens() int { return len(r.tokens) }

// Members returns the ring's members sorted by id. The caller must not modify
// the returned slice or the members' Tokens.
func (r *Ring) Members() []Member { return r.members }

// Member returns the member with the given id.
func (r *Ring) Member(id NodeID) (Member, bool) {
	i, ok := r.byID[id]
	if !ok {
		return Member{}, false
	}
	return r.members[i], true
}

// Conflicts returns, for each member that lost a token to a member with a
// smaller id (see New), the number of tokens it lost. It is empty for rings
// built by the allocator.
func (r *Ring) Conflicts() map[NodeID]int {
	var out map[NodeID]int
	owned := make([]int, len(r.members))
	for _, o := range r.owner {
		owned[o]++
	}
	for i, m := range r.members {
		if lost := len(m.Tokens) - owned[i]; lost > 0 {
			if out == nil {
				out = make(map[NodeID]int)
			}
			out[m.ID] = lost
		}
	}
	return out
}

// Add returns a new ring with m added. It fails if m's id is already on the
// ring or one of its tokens is owned by another member. Adding a StateLeft
// member returns the ring unchanged.
func (r *Ring) Add(m Member) (*Ring, error) {
	if _, ok := r.byID[m.ID]; ok {
		return nil, fmt.Errorf("%w: %q", ErrDuplicateMember, m.ID)
	}
	for _, t := range m.Tokens {
		if i, ok := slices.BinarySearch(r.tokens, t); ok {
			return nil, fmt.Errorf("%w: %#x by %q", ErrTokenConflict, uint64(t), r.members[r.owner[i]].ID)
		}
	}
	ms := append(slices.Clone(r.members), m)
	return New(&r.opts, ms...)
}

// Remove returns a new ring without the member id. Removing an unknown id
// returns r itself.
func (r *Ring) Remove(id NodeID) *Ring {
	i, ok := r.byID[id]
	if !ok {
		return r
	}
	ms := slices.Concat(r.members[:i], r.members[i+1:])
	return build(r.opts, ms)
}

// search returns the index of the token owning t: the first token >= t,
// wrapping to 0. REQUIRES: len(r.tokens) > 0.
func (r *Ring) search(t Token) int {
	lo, hi := 0, len(r.tokens)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if r.tokens[h] < t {
			lo = h + 1
		} else {
			hi = h
		}
	}
	if lo == len(r.tokens) {
		return 0
	}
	return lo
}

// walk appends to out (which must be empty) the preference list of length
// min(n, numPlaced) for the range ending at tokens[start] and returns it.
// It implements the placement contract described in the package comment.
func (r *Ring) walk(out []int32, start, n int) []int32 {
	n = min(n, r.numPlaced)
	nt := len(r.tokens)
	if n <= 0 || nt == 0 {
		return out
	}
	// Pass 1: distinct zones.
	idx := start
	for k := 0; k < nt && len(out) < n && len(out) < r.numZones; k++ {
		m := r.owner[idx]
		if idx++; idx == nt {
			idx = 0
		}
		z := r.zoneOf[m]
		used := false
		for _, o := range out {
			if r.zoneOf[o] == z {
				used = true
				break
			}
		}
		if !used {
			out = append(out, m)
		}
	}
	// Pass 2: the members skipped for their zone, clockwise.
	idx = start
	for k := 0; k < nt && len(out) < n; k++ {
		m := r.owner[idx]
		if idx++; idx == nt {
			idx = 0
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// prefInto appends the member indexes of the preference list of length n for
// the range ending at tokens[i] to out.
func (r *Ring) prefInto(out []int32, i, n int) []int32 {
	if n <= r.prefN {
		return append(out, r.pref[i*r.prefN:i*r.prefN+n]...)
	}
	return r.walk(out, i, n)
}

// Owners returns the preference list for key: up to n distinct members,
// clockwise from the key's token, spread over distinct zones first. It
// allocates the result; use OwnersInto on hot paths.
func (r *Ring) Owners(key []byte, n int) []NodeID {
	return r.OwnersInto(make([]NodeID, 0, max(0, min(n, r.numPlaced))), key, n)
}

// OwnersInto appends the preference list for key to dst[:0] and returns it.
// It returns fewer than n members when the ring has fewer placed members, and
// an empty list when the ring is empty or n <= 0. It does not allocate when
// n <= Options.ReplicationFactor and dst has capacity for n members; larger n
// walk the ring and allocate only for n > 64.
func (r *Ring) OwnersInto(dst []NodeID, key []byte, n int) []NodeID {
	return r.OwnersOfTokenInto(dst, KeyToken(key), n)
}

// OwnersOfTokenInto is OwnersInto for a token instead of a key.
func (r *Ring) OwnersOfTokenInto(dst []NodeID, t Token, n int) []NodeID {
	dst = dst[:0]
	if n <= 0 || len(r.tokens) == 0 {
		return dst
	}
	i := r.search(t)
	if n <= r.prefN {
		for _, m := range r.pref[i*r.prefN : i*r.prefN+n] {
			dst = append(dst, r.members[m].ID)
		}
		return dst
	}
	var buf [64]int32
	for _, m := range r.walk(buf[:0], i, n) {
		dst = append(dst, r.members[m].ID)
	}
	return dst
}

// rangeAt returns the range ending at tokens[i].
func (r *Ring) rangeAt(i int) Range {
	prev := i - 1
	if prev < 0 {
		prev = len(r.tokens) - 1
	}
	return Range{Start: r.tokens[prev], End: r.tokens[i]}
}

// Ranges returns the token ranges for which id is one of the n replicas, in
// token order, with adjacent ranges merged. It returns nil for an unknown or
// tokenless member. Streaming and repair use it.
func (r *Ring) Ranges(id NodeID, n int) []Range {
	m, ok := r.byID[id]
	if !ok || len(r.tokens) == 0 {
		return nil
	}
	var out []Range
	var buf []int32
	for i := range r.tokens {
		buf = r.prefInto(buf[:0], i, n)
		if !slices.Contains(buf, m) {
			continue
		}
		rg := r.rangeAt(i)
		if k := len(out); k > 0 && out[k-1].End == rg.Start {
			out[k-1].End = rg.End
		} else {
			out = append(out, rg)
		}
	}
	// Merge the range that wraps past the last token with the first one.
	if k := len(out); k > 1 && out[k-1].End == out[0].Start {
		out[0].Start = out[k-1].Start
		out = out[:k-1]
	}
	return out
}

// Ownership returns, for every placed member, the fraction of the token space
// for which it is one of the n replicas. With n = 1 it is the primary share.
// The values sum to min(n, placed members).
func (r *Ring) Ownership(n int) map[NodeID]float64 {
	out := make(map[NodeID]float64, r.numPlaced)
	var buf []int32
	for i := range r.tokens {
		size := r.rangeAt(i).Size()
		if len(r.tokens) == 1 {
			size = 1
		}
		buf = r.prefInto(buf[:0], i, n)
		for _, m := range buf {
			out[r.members[m].ID] += size
		}
	}
	return out
}

// Balance summarises an ownership map: the largest and smallest share divided
// by the mean share. A perfectly balanced ring has max = min = 1.
func Balance(own map[NodeID]float64) (maxOverMean, minOverMean float64) {
	if len(own) == 0 {
		return 0, 0
	}
	sum, hi, lo := 0.0, 0.0, 2.0
	for _, v := range own {
		sum += v
		hi = max(hi, v)
		lo = min(lo, v)
	}
	mean := sum / float64(len(own))
	return hi / mean, lo / mean
}
