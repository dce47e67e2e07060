package node

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tierkv/tierkv/ring"
	"github.com/tierkv/tierkv/ring/gossip"
)

// clockIDsConverged reports whether every running node sees every running
// node (itself included) with the clock id that node uses, and the ids are
// distinct.
func (c *testCluster) clockIDsConverged() bool {
	seen := map[uint8]string{}
	for _, a := range c.nodes {
		if a == nil {
			continue
		}
		if prev, dup := seen[a.ClockID()]; dup {
			c.t.Logf("%s and %s both use clock id %d", prev, a.ID(), a.ClockID())
			return false
		}
		seen[a.ClockID()] = a.ID()
		for _, b := range c.nodes {
			if b == nil {
				continue
			}
			m, ok := b.g.Member(a.id)
			if !ok || !m.HasClockID || m.ClockID != a.ClockID() {
				return false
			}
		}
	}
	return true
}

func (c *testCluster) clockIDs() []uint8 {
	var out []uint8
	for _, n := range c.nodes {
		if n != nil {
			out = append(out, n.ClockID())
		}
	}
	return out
}

func setPersistedClockID(t *testing.T, dir string, id uint8) {
	t.Helper()
	ident, found, err := loadIdentity(dir)
	if err != nil || !found {
		t.Fatal(found, err)
	}
	ident.ClockID = &id
	if err := saveIdentity(dir, ident); err != nil {
		t.Fatal(err)
	}
}

// TestClockIDs: clock ids are unique in the cluster, persisted, kept on
// restart, taken over by a replacement with the same id and an empty data
// dir, and a collision (two members with one clock id) is resolved by the
// later start. Versions carry the coordinator's clock id, and the
// last-seen-version rule orders two writes through two coordinators in the
// same (frozen) millisecond.
func TestClockIDs(t *testing.T) {
	clk := &manualClock{t: time.Now()}
	c := startCluster(t, 3, func(cfg *Config) { cfg.Clock = clk })
	if got := c.clockIDs(); !slices.Equal(got, []uint8{0, 1, 2}) {
		t.Fatalf("clock ids %v, want [0 1 2] (smallest free at each join)", got)
	}
	waitFor(t, 10*time.Second, "clock ids gossiped", c.clockIDsConverged)
	var persisted identity
	b, _ := os.ReadFile(filepath.Join(c.dirs[1], identityFile))
	if err := json.Unmarshal(b, &persisted); err != nil || persisted.ClockID == nil || *persisted.ClockID != 1 {
		t.Fatalf("node.json of n2: %s", b)
	}

	// Invariant 2 in one frozen millisecond: versions carry the
	// coordinator's clock id; with the last version seen, a write through
	// another coordinator wins.
	ctx := ctxT(t)
	key := []byte("same-ms")
	v1, err := c.nodes[0].Put(ctx, key, []byte("first"), All, 0)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := c.nodes[1].Put(ctx, key, []byte("second"), All, v1)
	if err != nil {
		t.Fatal(err)
	}
	if v1&hlcNodeMask != uint64(c.nodes[0].ClockID()) || v2&hlcNodeMask != uint64(c.nodes[1].ClockID()) {
		t.Fatalf("versions %x %x do not carry clock ids %d %d", v1, v2, c.nodes[0].ClockID(), c.nodes[1].ClockID())
	}
	if VersionTime(v1) != VersionTime(v2) || v2 <= v1 {
		t.Fatalf("v1 %x, v2 %x: want the same millisecond and v2 > v1", v1, v2)
	}
	for _, n := range c.nodes {
		if e, err := n.ReadLocalForTesting(key); err != nil || string(e.Value) != "second" {
			t.Fatalf("%s holds %q, %v", n.ID(), e.Value, err)
		}
	}
	clk.Advance(time.Second)

	// A restart keeps the clock id.
	c.stop(1)
	c.start(1)
	c.waitReady()
	if got := c.nodes[1].ClockID(); got != 1 {
		t.Fatalf("restarted n2 has clock id %d, want 1", got)
	}

	// A persisted clock id is used as is (5 is not what a first join
	// would pick: the replacement below must learn it).
	c.stop(2)
	setPersistedClockID(t, c.dirs[2], 5)
	c.start(2)
	c.waitReady()
	if got := c.nodes[2].ClockID(); got != 5 {
		t.Fatalf("restarted n3 has clock id %d, want its persisted 5", got)
	}
	waitFor(t, 10*time.Second, "n3's clock id gossiped", c.clockIDsConverged)

	// A replacement: n3's data dir is lost; a new process with id n3 and
	// an empty data dir takes over n3's clock id (not the smallest free,
	// 2) and tokens.
	tokens := slices.Clone(c.nodes[2].g.Self().Tokens)
	c.stop(2)
	if err := os.RemoveAll(c.dirs[2]); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second) // the new process's generation is later
	c.start(2)
	c.waitReady()
	if got := c.nodes[2].ClockID(); got != 5 {
		t.Fatalf("replacement n3 has clock id %d, want n3's 5", got)
	}
	if got := c.nodes[2].g.Self().Tokens; !slices.Equal(got, tokens) {
		t.Fatalf("replacement n3 did not take over n3's tokens")
	}
	waitFor(t, 10*time.Second, "clock ids unique after the replacement", c.clockIDsConverged)

	// A collision (as after two concurrent first joins): n3 restarts
	// claiming n1's clock id. n3 started later, so n3 picks a new one
	// (the smallest free: 2); n1 keeps 0.
	c.stop(2)
	setPersistedClockID(t, c.dirs[2], 0)
	c.start(2)
	c.waitReady()
	waitFor(t, 10*time.Second, "collision resolved", c.clockIDsConverged)
	if got := c.clockIDs(); !slices.Equal(got, []uint8{0, 1, 2}) {
		t.Fatalf("after the collision: clock ids %v, want [0 1 2]", got)
	}
	ident, _, _ := loadIdentity(c.dirs[2])
	if ident.ClockID == nil || *ident.ClockID != 2 {
		t.Fatalf("n3's re-picked clock id not persisted: %+v", ident)
	}
	v3, err := c.nodes[2].Put(ctx, key, []byte("third"), All, v2)
	if err != nil || v3&hlcNodeMask != 2 {
		t.Fatalf("n3's version %x, %v", v3, err)
	}
}

func TestPickClockID(t *testing.T) {
	var ms []gossip.Member
	add := func(id string, clock uint8, has bool) {
		m := gossip.Member{}
		m.ID, m.ClockID, m.HasClockID = ring.NodeID(id), clock, has
		ms = append(ms, m)
	}
	add("self", 0, true)
	add("a", 1, true)
	add("b", 0, false)
	add("c", 3, true)
	if id, ok := pickClockID(ms, "self"); !ok || id != 0 {
		t.Fatalf("pick %d %v, want 0 (self's own does not count)", id, ok)
	}
	add("d", 0, true)
	if id, ok := pickClockID(ms, "self"); !ok || id != 2 {
		t.Fatalf("pick %d %v, want 2", id, ok)
	}
	ms = nil
	for i := range gossip.MaxClockID + 1 {
		add(fmt.Sprint("m", i), uint8(i), true)
	}
	if _, ok := pickClockID(ms, "self"); ok {
		t.Fatal("picked a clock id with all 64 taken")
	}
	// The later start yields; on equal generations the larger id.
	o := &gossip.Member{}
	o.ID, o.Generation = "m", 10
	if !yieldsClockID(11, "a", o) || yieldsClockID(9, "z", o) || !yieldsClockID(10, "z", o) || yieldsClockID(10, "a", o) {
		t.Fatal("yieldsClockID")
	}
}
