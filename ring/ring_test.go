package ring

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// growRing returns the ring after n members n001..nNNN joined one at a time,
// each allocating its tokens from the ring as it stood. If each is not nil it
// is called after every join.
func growRing(tb testing.TB, opts *Options, n int, each func(r *Ring)) *Ring {
	tb.Helper()
	r, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		r = join(tb, r, NodeID(fmt.Sprintf("n%03d", i)), "")
		if each != nil {
			each(r)
		}
	}
	return r
}

func join(tb testing.TB, r *Ring, id NodeID, zone string) *Ring {
	tb.Helper()
	toks, err := r.AllocateTokens(id)
	if err != nil {
		tb.Fatal(err)
	}
	r2, err := r.Add(Member{ID: id, Zone: zone, State: StateNormal, Tokens: toks})
	if err != nil {
		tb.Fatal(err)
	}
	return r2
}

// TestKeyTokenContract pins the key hash: it is part of the placement
// contract shared by servers and the SDK.
func TestKeyTokenContract(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want Token
	}{
		{"", 0xef46db3751d8e999},
		{"a", 0xd24ec4f1a98c6e5b},
		{"user/42", 0xe89f2a24fc2bb767},
		{"tierkv", 0x82cca41c588e3880},
	} {
		if got := KeyToken([]byte(tc.key)); got != tc.want {
			t.Errorf("KeyToken(%q) = %#x, want %#x", tc.key, uint64(got), uint64(tc.want))
		}
	}
}

func TestOptions(t *testing.T) {
	o := (*Options)(nil).EnsureDefaults()
	if o.VNodes != DefaultVNodes || o.ReplicationFactor != DefaultReplicationFactor {
		t.Fatalf("defaults: %+v", o)
	}
	for _, bad := range []Options{{VNodes: -1, ReplicationFactor: 3}, {VNodes: MaxVNodes + 1, ReplicationFactor: 3}, {VNodes: 8, ReplicationFactor: 17}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: expected error", bad)
		}
		if _, err := New(&bad); err == nil {
			t.Errorf("New(%+v): expected error", bad)
		}
	}
}

func TestNewValidation(t *testing.T) {
	if _, err := New(nil, Member{ID: ""}); !errors.Is(err, ErrInvalidMember) {
		t.Errorf("empty id: %v", err)
	}
	if _, err := New(nil, Member{ID: "a", State: 9}); !errors.Is(err, ErrInvalidMember) {
		t.Errorf("bad state: %v", err)
	}
	if _, err := New(nil, Member{ID: "a"}, Member{ID: "a"}); !errors.Is(err, ErrDuplicateMember) {
		t.Errorf("duplicate: %v", err)
	}
	// LEFT members are not placed.
	r, err := New(nil, Member{ID: "a", Tokens: []Token{1}}, Member{ID: "b", State: StateLeft, Tokens: []Token{2}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 1 || r.NumTokens() != 1 {
		t.Fatalf("LEFT member placed: len %d tokens %d", r.Len(), r.NumTokens())
	}
	if got := r.Owners([]byte("k"), 3); !slices.Equal(got, []NodeID{"a"}) {
		t.Fatalf("owners %v", got)
	}
	// A token claimed twice goes to the smaller id.
	r, err = New(nil, Member{ID: "b", Tokens: []Token{10, 20}}, Member{ID: "a", Tokens: []Token{20, 30}})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Conflicts(); len(got) != 1 || got["b"] != 1 {
		t.Fatalf("conflicts %v", got)
	}
	if got := r.OwnersOfTokenInto(nil, 15, 1); got[0] != "a" {
		t.Fatalf("token 20 owned by %v, want a", got)
	}
	if _, err := r.Add(Member{ID: "c", Tokens: []Token{30}}); !errors.Is(err, ErrTokenConflict) {
		t.Fatalf("Add conflict: %v", err)
	}
	if _, err := r.Add(Member{ID: "a", Tokens: []Token{40}}); !errors.Is(err, ErrDuplicateMember) {
		t.Fatalf("Add duplicate: %v", err)
	}
	if r.Remove("zzz") != r {
		t.Fatal("Remove of unknown id should return the receiver")
	}
	// Empty ring and silly n.
	empty, _ := New(nil)
	if got := empty.Owners([]byte("k"), 3); len(got) != 0 {
		t.Fatalf("empty ring owners %v", got)
	}
	if got := r.Owners([]byte("k"), 0); len(got) != 0 {
		t.Fatalf("n=0 owners %v", got)
	}
	if got := r.Owners([]byte("k"), -5); len(got) != 0 {
		t.Fatalf("n<0 owners %v", got)
	}
}

func TestRangeContains(t *testing.T) {
	for _, tc := range []struct {
		r    Range
		t    Token
		want bool
	}{
		{Range{10, 20}, 10, false},
		{Range{10, 20}, 11, true},
		{Range{10, 20}, 20, true},
		{Range{10, 20}, 21, false},
		// Wrapping range.
		{Range{20, 10}, 25, true},
		{Range{20, 10}, 5, true},
		{Range{20, 10}, 15, false},
		{Range{20, 10}, 20, false},
		// Whole ring.
		{Range{7, 7}, 0, true},
		{Range{7, 7}, 7, true},
	} {
		if got := tc.r.Contains(tc.t); got != tc.want {
			t.Errorf("%v.Contains(%d) = %v", tc.r, tc.t, got)
		}
	}
	if s := (Range{7, 7}).Size(); s != 1 {
		t.Errorf("whole ring size %v", s)
	}
}

// naiveOwners is the reference placement: the list of distinct members in
// clockwise order from the key's token; take zone-new members while zones
// remain, then the rest in order.
func naiveOwners(ms []Member, t Token, n int) []NodeID {
	type to struct {
		t  Token
		id NodeID
	}
	var all []to
	zoneOf := map[NodeID]string{}
	for _, m := range ms {
		zoneOf[m.ID] = m.Zone
		for _, tk := range m.Tokens {
			all = append(all, to{tk, m.ID})
		}
	}
	if len(all) == 0 {
		return nil
	}
	slices.SortFunc(all, func(a, b to) int {
		if a.t != b.t {
			if a.t < b.t {
				return -1
			}
			return 1
		}
		if a.id < b.id {
			return -1
		}
		return 1
	})
	all = slices.CompactFunc(all, func(a, b to) bool { return a.t == b.t })
	start := 0
	for start < len(all) && all[start].t < t {
		start++
	}
	var distinct []NodeID
	for k := range all {
		id := all[(start+k)%len(all)].id
		if !slices.Contains(distinct, id) {
			distinct = append(distinct, id)
		}
	}
	zones := map[string]bool{}
	for _, id := range distinct {
		zones[zoneOf[id]] = true
	}
	var out []NodeID
	used := map[string]bool{}
	for _, id := range distinct {
		if len(out) == n || len(used) == len(zones) {
			break
		}
		if !used[zoneOf[id]] {
			used[zoneOf[id]] = true
			out = append(out, id)
		}
	}
	for _, id := range distinct {
		if len(out) == n {
			break
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func randomMembers(rng *rand.Rand, nodes, maxTokens, zones int) []Member {
	ms := make([]Member, nodes)
	for i := range ms {
		ms[i].ID = NodeID(fmt.Sprintf("m%02d", i))
		if zones > 0 {
			ms[i].Zone = fmt.Sprintf("z%d", rng.IntN(zones))
		}
		k := rng.IntN(maxTokens + 1) // some members own nothing
		for range k {
			// Small token space in some rings to force conflicts.
			if rng.IntN(4) == 0 {
				ms[i].Tokens = append(ms[i].Tokens, Token(rng.IntN(64)))
			} else {
				ms[i].Tokens = append(ms[i].Tokens, Token(rng.Uint64()))
			}
		}
	}
	return ms
}

// TestOwnersModel checks OwnersInto against naiveOwners on random rings with
// and without zones, for preference lists shorter and longer than the
// precomputed replication factor.
func TestOwnersModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 300 {
		nodes := 1 + rng.IntN(12)
		ms := randomMembers(rng, nodes, 6, rng.IntN(5))
		rf := 1 + rng.IntN(4)
		r, err := New(&Options{ReplicationFactor: rf}, ms...)
		if err != nil {
			t.Fatal(err)
		}
		var dst []NodeID
		for range 50 {
			var tk Token
			if rng.IntN(3) == 0 {
				tk = Token(rng.IntN(70))
			} else {
				tk = Token(rng.Uint64())
			}
			n := rng.IntN(nodes + 3)
			want := naiveOwners(ms, tk, n)
			dst = r.OwnersOfTokenInto(dst, tk, n)
			if !slices.Equal(dst, want) && !(len(dst) == 0 && len(want) == 0) {
				t.Fatalf("iter %d rf %d token %#x n %d:\n got  %v\n want %v\n members %+v", iter, rf, uint64(tk), n, dst, want, ms)
			}
		}
	}
}

// TestZoneSpreading checks that a preference list covers min(n, zones)
// distinct zones, and spells out one example.
func TestZoneSpreading(t *testing.T) {
	// Tokens 10..60; zones a a b a c c clockwise.
	ms := []Member{
		{ID: "n1", Zone: "a", Tokens: []Token{10}},
		{ID: "n2", Zone: "a", Tokens: []Token{20}},
		{ID: "n3", Zone: "b", Tokens: []Token{30}},
		{ID: "n4", Zone: "a", Tokens: []Token{40}},
		{ID: "n5", Zone: "c", Tokens: []Token{50}},
		{ID: "n6", Zone: "c", Tokens: []Token{60}},
	}
	r, _ := New(nil, ms...)
	for _, tc := range []struct {
		t    Token
		n    int
		want []NodeID
	}{
		{5, 3, []NodeID{"n1", "n3", "n5"}},
		{5, 4, []NodeID{"n1", "n3", "n5", "n2"}},
		{35, 3, []NodeID{"n4", "n5", "n3"}},
		{55, 2, []NodeID{"n6", "n1"}},
		{55, 6, []NodeID{"n6", "n1", "n3", "n2", "n4", "n5"}},
	} {
		if got := r.OwnersOfTokenInto(nil, tc.t, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("token %d n %d: got %v want %v", tc.t, tc.n, got, tc.want)
		}
	}
	// Property on allocated rings with zones.
	rz, _ := New(nil)
	for i := range 12 {
		rz = join(t, rz, NodeID(fmt.Sprintf("z%02d", i)), fmt.Sprintf("zone%d", i%3))
	}
	for k := range 2000 {
		got := rz.Owners([]byte(fmt.Sprint(k)), 3)
		zones := map[string]bool{}
		for _, id := range got {
			m, _ := rz.Member(id)
			zones[m.Zone] = true
		}
		if len(zones) != 3 {
			t.Fatalf("key %d: owners %v span %d zones", k, got, len(zones))
		}
	}
}

// TestRangesOwnershipDiffConsistency checks Ranges, Ownership and Diff
// against Owners on random rings.
func TestRangesOwnershipDiffConsistency(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := range 60 {
		nodes := 1 + rng.IntN(8)
		ms := randomMembers(rng, nodes, 5, rng.IntN(3))
		r, _ := New(nil, ms...)
		n := 1 + rng.IntN(4)
		// Ownership sums to min(n, placed).
		sum := 0.0
		for _, v := range r.Ownership(n) {
			sum += v
		}
		if want := float64(min(n, r.numPlaced)); r.numPlaced > 0 && (sum < want-1e-9 || sum > want+1e-9) {
			t.Fatalf("iter %d: ownership sums to %v, want %v", iter, sum, want)
		}
		ranges := map[NodeID][]Range{}
		for _, m := range ms {
			ranges[m.ID] = r.Ranges(m.ID, n)
		}
		// A second ring: drop one member, add one.
		ms2 := slices.Clone(ms[1:])
		ms2 = append(ms2, Member{ID: "new", Tokens: []Token{Token(rng.Uint64()), Token(rng.Uint64())}})
		r2, _ := New(nil, ms2...)
		changes := Diff(r, r2, n)
		for range 300 {
			tk := Token(rng.Uint64())
			owners := r.OwnersOfTokenInto(nil, tk, n)
			for _, m := range ms {
				in := false
				for _, rg := range ranges[m.ID] {
					in = in || rg.Contains(tk)
				}
				if in != slices.Contains(owners, m.ID) {
					t.Fatalf("iter %d token %#x: Ranges(%s) says %v, Owners %v", iter, uint64(tk), m.ID, in, owners)
				}
			}
			owners2 := r2.OwnersOfTokenInto(nil, tk, n)
			var hit *Change
			for i := range changes {
				if changes[i].Range.Contains(tk) {
					if hit != nil {
						t.Fatalf("overlapping changes")
					}
					hit = &changes[i]
				}
			}
			if sameSet(owners, owners2) != (hit == nil) {
				t.Fatalf("iter %d token %#x: owners %v -> %v, change %+v", iter, uint64(tk), owners, owners2, hit)
			}
			if hit != nil && (!slices.Equal(hit.From, owners) || !slices.Equal(hit.To, owners2)) {
				t.Fatalf("iter %d: change %+v, owners %v -> %v", iter, hit, owners, owners2)
			}
		}
	}
}

// TestAllocateDeterministicAndReplacement checks that allocation depends only
// on the ring and the id, that an id keeps its tokens, and that a replacement
// node that reuses a dead node's id (and so its tokens) takes over exactly its
// ranges.
func TestAllocateDeterministicAndReplacement(t *testing.T) {
	r1 := growRing(t, nil, 20, nil)
	r2 := growRing(t, nil, 20, nil)
	for _, m := range r1.Members() {
		m2, _ := r2.Member(m.ID)
		if !slices.Equal(m.Tokens, m2.Tokens) {
			t.Fatalf("%s: tokens differ between identical growths", m.ID)
		}
		if len(m.Tokens) != DefaultVNodes {
			t.Fatalf("%s has %d tokens", m.ID, len(m.Tokens))
		}
	}
	a, _ := r1.AllocateTokens("x")
	b, _ := r1.AllocateTokens("x")
	if !slices.Equal(a, b) {
		t.Fatal("allocation not deterministic")
	}
	own, _ := r1.AllocateTokens("n007")
	m7, _ := r1.Member("n007")
	if !slices.Equal(own, m7.Tokens) {
		t.Fatal("an existing id must keep its tokens")
	}
	// n007 dies; a replacement with the same id and tokens (learned from
	// gossip) but a new zone label takes over exactly its ranges.
	before := r1.Ranges("n007", 3)
	rep := r1.Remove("n007")
	rep, err := rep.Add(Member{ID: "n007", State: StateJoining, Tokens: m7.Tokens})
	if err != nil {
		t.Fatal(err)
	}
	if after := rep.Ranges("n007", 3); !slices.Equal(before, after) {
		t.Fatalf("replacement ranges differ")
	}
	if d := Diff(r1, rep, 3); len(d) != 0 {
		t.Fatalf("replacement moved %d ranges", len(d))
	}
}

func BenchmarkOwnersInto(b *testing.B) {
	for _, nodes := range []int{10, 100} {
		r := growRing(b, nil, nodes, nil)
		keys := make([][]byte, 1024)
		for i := range keys {
			keys[i] = fmt.Appendf(nil, "user/%d", i)
		}
		for _, n := range []int{3, 5} {
			b.Run(fmt.Sprintf("nodes=%d/n=%d", nodes, n), func(b *testing.B) {
				b.ReportAllocs()
				dst := make([]NodeID, 0, 8)
				i := 0
				for b.Loop() {
					dst = r.OwnersInto(dst, keys[i&1023], n)
					i++
				}
			})
		}
	}
}

func BenchmarkAllocateTokens(b *testing.B) {
	for _, nodes := range []int{10, 100, 200} {
		r := growRing(b, nil, nodes, nil)
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.AllocateTokens("joiner"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
