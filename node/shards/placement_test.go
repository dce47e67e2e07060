package shards

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/ring"
)

// buildRing returns a ring of members n01..nNN (zones round-robin if any),
// each allocating its tokens on the ring as it stood.
func buildRing(t testing.TB, n int, zones ...string) *ring.Ring {
	t.Helper()
	r, err := ring.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		r = addMember(t, r, ring.NodeID(fmt.Sprintf("n%02d", i)), zoneOf(zones, i))
	}
	return r
}

func zoneOf(zones []string, i int) string {
	if len(zones) == 0 {
		return ""
	}
	return zones[(i-1)%len(zones)]
}

func addMember(t testing.TB, r *ring.Ring, id ring.NodeID, zone string) *ring.Ring {
	t.Helper()
	toks, err := r.AllocateTokens(id)
	if err != nil {
		t.Fatal(err)
	}
	r, err = r.Add(ring.Member{ID: id, Zone: zone, State: ring.StateNormal, Tokens: toks})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustPlace(t testing.TB, r *ring.Ring, self ring.NodeID, name string, k, m int) []ring.NodeID {
	t.Helper()
	pl, err := Placement(r, self, name, k, m)
	if err != nil {
		t.Fatalf("Placement(%q): %v", name, err)
	}
	if len(pl) != k+m {
		t.Fatalf("Placement(%q) has %d nodes, want %d", name, len(pl), k+m)
	}
	return pl
}

// TestPlacement: never Self, k+m distinct nodes when there are enough,
// deterministic for equal rings, and spread over all nodes.
func TestPlacement(t *testing.T) {
	const k, m = 4, 2
	r := buildRing(t, 10)
	// The same members and tokens, built independently.
	r2, err := ring.New(nil, slices.Clone(r.Members())...)
	if err != nil {
		t.Fatal(err)
	}
	load := map[ring.NodeID]int{}
	const objects = 3000
	for i := range objects {
		name := fmt.Sprintf("n03/tables/%06d.sst", i)
		pl := mustPlace(t, r, "n03", name, k, m)
		if slices.Contains(pl, "n03") {
			t.Fatalf("%s placed on Self: %v", name, pl)
		}
		if d := slices.Compact(slices.Sorted(slices.Values(pl))); len(d) != k+m {
			t.Fatalf("%s: shards not on distinct nodes: %v", name, pl)
		}
		if again := mustPlace(t, r, "n03", name, k, m); !slices.Equal(again, pl) {
			t.Fatalf("%s: placement not stable: %v then %v", name, pl, again)
		}
		if other := mustPlace(t, r2, "n03", name, k, m); !slices.Equal(other, pl) {
			t.Fatalf("%s: an equal ring places it elsewhere: %v vs %v", name, pl, other)
		}
		for _, n := range pl {
			load[n]++
		}
	}
	// 9 eligible nodes share 6 shards of every object: the mean is
	// objects*6/9 per node.
	mean := float64(objects*(k+m)) / 9
	if len(load) != 9 {
		t.Fatalf("shards on %d nodes, want the 9 others: %v", len(load), load)
	}
	for n, c := range load {
		if float64(c) < 0.8*mean || float64(c) > 1.2*mean {
			t.Errorf("%s holds %d shards, mean %.0f: placement unbalanced (%v)", n, c, mean, load)
		}
	}
	// Self not on the ring at all: all 10 members are used.
	if pl := mustPlace(t, r, "elsewhere", "x", 5, 5); len(slices.Compact(slices.Sorted(slices.Values(pl)))) != 10 {
		t.Fatalf("10 shards over 10 members: %v", pl)
	}
	if _, err := Placement(r, "n01", "bad//name", k, m); !errors.Is(err, objectstore.ErrInvalidName) {
		t.Fatalf("invalid name: %v", err)
	}
}

// TestPlacementZones: with zones, the shards spread evenly over them.
func TestPlacementZones(t *testing.T) {
	const k, m = 4, 2
	r := buildRing(t, 9, "a", "b", "c")
	for i := range 1000 {
		name := fmt.Sprintf("obj/%d", i)
		pl := mustPlace(t, r, "n01", name, k, m)
		perZone := map[string]int{}
		for _, n := range pl {
			mem, _ := r.Member(n)
			perZone[mem.Zone]++
		}
		for z, c := range perZone {
			if c != 2 {
				t.Fatalf("%s: %d shards in zone %s, want 2 in each of 3 zones: %v (%v)", name, c, z, pl, perZone)
			}
		}
		if len(perZone) != 3 {
			t.Fatalf("%s: zones %v", name, perZone)
		}
	}
}

// TestPlacementFewNodes: with fewer other nodes than k+m the slots wrap
// around evenly; with none, placement fails clearly.
func TestPlacementFewNodes(t *testing.T) {
	const k, m = 4, 2
	r := buildRing(t, 3)
	for i := range 200 {
		name := fmt.Sprintf("obj/%d", i)
		pl := mustPlace(t, r, "n01", name, k, m)
		count := map[ring.NodeID]int{}
		for _, n := range pl {
			count[n]++
		}
		if count["n01"] != 0 || count["n02"] != 3 || count["n03"] != 3 {
			t.Fatalf("%s over 2 peers: %v", name, pl)
		}
	}
	r4 := buildRing(t, 5)
	for i := range 200 {
		count := map[ring.NodeID]int{}
		for _, n := range mustPlace(t, r4, "n01", fmt.Sprintf("obj/%d", i), k, m) {
			count[n]++
		}
		if len(count) != 4 || slices.Max(slices.Collect(mapValues(count))) != 2 {
			t.Fatalf("6 shards over 4 peers: %v", count)
		}
	}
	for _, tc := range []struct{ peers, k, m, want int }{
		{0, 4, 2, 0}, {1, 4, 2, 0}, {2, 4, 2, 0}, {3, 4, 2, 1}, {4, 4, 2, 1}, {5, 4, 2, 1}, {6, 4, 2, 2}, {100, 4, 2, 2},
		{2, 1, 1, 1}, {1, 1, 1, 0}, {6, 3, 3, 3}, {3, 3, 3, 1},
	} {
		if got := Redundancy(tc.peers, tc.k, tc.m); got != tc.want {
			t.Errorf("Redundancy(%d, %d, %d) = %d, want %d", tc.peers, tc.k, tc.m, got, tc.want)
		}
	}
	alone := buildRing(t, 1)
	_, err := Placement(alone, "n01", "x", k, m)
	if !errors.Is(err, ErrNoPeers) || !objectstore.IsTransient(err) {
		t.Fatalf("placement with no peer = %v, want transient ErrNoPeers", err)
	}
}

func mapValues[K comparable, V any](m map[K]V) func(func(V) bool) {
	return func(yield func(V) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// TestPlacementLeaving: a LEAVING member receives no shard.
func TestPlacementLeaving(t *testing.T) {
	r := buildRing(t, 8)
	mem, _ := r.Member("n05")
	mem.State = ring.StateLeaving
	r, err := r.Remove("n05").Add(mem)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		if pl := mustPlace(t, r, "n01", fmt.Sprintf("o/%d", i), 4, 2); slices.Contains(pl, "n05") {
			t.Fatalf("placed on a LEAVING member: %v", pl)
		}
	}
}

// TestPlacementMovement: a join or leave moves about (k+m)/N of the
// shards, not every slot after the change.
func TestPlacementMovement(t *testing.T) {
	const k, m, objects = 4, 2, 4000
	r := buildRing(t, 10)
	joined := addMember(t, r, "n11", "")
	left := r.Remove("n07")
	for _, tc := range []struct {
		what  string
		after *ring.Ring
		// ideal fraction of shards that must move.
		ideal float64
	}{
		{"join", joined, 1.0 / 10}, // 10 eligible after, n11 takes 1/10
		{"leave", left, 1.0 / 9},   // n07 held 1/9 of the shards
	} {
		moved := 0
		for i := range objects {
			name := fmt.Sprintf("n01/tables/%d", i)
			before, after := mustPlace(t, r, "n01", name, k, m), mustPlace(t, tc.after, "n01", name, k, m)
			for s := range before {
				if before[s] != after[s] {
					moved++
				}
			}
		}
		frac := float64(moved) / float64(objects*(k+m))
		t.Logf("%s: %.4f of the shards moved (ideal %.4f)", tc.what, frac, tc.ideal)
		if frac < tc.ideal*0.7 || frac > tc.ideal*1.6 {
			t.Errorf("%s moved %.4f of the shards, ideal %.4f", tc.what, frac, tc.ideal)
		}
	}
}
