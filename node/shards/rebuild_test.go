package shards

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/erasure"
	"github.com/tierkv/tierkv/objectstore/objectstoretest"
	"github.com/tierkv/tierkv/ring"
)

// goneBucket is a shard bucket that has lost everything.
type goneBucket struct{ objectstore.Bucket }

func (goneBucket) Get(_ context.Context, name string) (io.ReadCloser, error) {
	return nil, fmt.Errorf("masked %s: %w", name, objectstore.ErrNotExist)
}

func (goneBucket) GetRange(_ context.Context, name string, _, _ int64) (io.ReadCloser, error) {
	return nil, fmt.Errorf("masked %s: %w", name, objectstore.ErrNotExist)
}

// verifyRedundancy checks that every one of the k+m shards of name is
// good and on its node: it reads the object through erasure twice with one
// data slot masked as lost (so erasure also reads and checks every parity
// shard), with the search disabled (so only the placed nodes count), and
// requires the masked slot to be the only bad one.
func verifyRedundancy(t *testing.T, o Options, name string, want []byte) {
	t.Helper()
	o.SearchWidth = -1
	f, err := newFleet(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, masked := range []int{0, 1} {
		slots := make([]objectstore.Bucket, f.n())
		for i := range slots {
			slots[i] = &slot{f: f, i: i}
		}
		slots[masked] = goneBucket{slots[masked]}
		var bad []int
		var mu sync.Mutex
		b, err := erasure.New(slots, erasure.Options{DataShards: o.K, ParityShards: o.M, OnReconstruct: func(_ string, se []erasure.ShardError) {
			mu.Lock()
			defer mu.Unlock()
			for _, s := range se {
				bad = append(bad, s.Index)
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := objectstore.ReadAll(context.Background(), b, name)
		if err != nil {
			t.Fatalf("%s (slot %d masked): %v", name, masked, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s (slot %d masked): different bytes", name, masked)
		}
		if !slices.Equal(bad, []int{masked}) {
			t.Fatalf("%s (slot %d masked): bad shards %v, want only the masked one", name, masked, bad)
		}
	}
}

// putObjects stores count objects of various sizes (0 included) through
// an erasure bucket and returns them.
func putObjects(t *testing.T, b objectstore.Bucket, prefix string, count int) map[string][]byte {
	t.Helper()
	objs := map[string][]byte{}
	for i := range count {
		name := fmt.Sprintf("%s%03d.sst", prefix, i)
		objs[name] = objectstoretest.Data(uint64(i), (i*i*211)%50_000)
		put(t, b, name, objs[name])
	}
	return objs
}

// shardsOf returns, for every object, which nodes hold which slot.
func shardsOf(c *tcluster, self ring.NodeID) map[string]map[int][]ring.NodeID {
	out := map[string]map[int][]ring.NodeID{}
	for _, id := range c.ids() {
		for _, st := range c.storedOn(id) {
			parts := strings.SplitN(st, "/", 3)
			if ring.NodeID(parts[0]) != self {
				continue
			}
			var i int
			fmt.Sscan(parts[1], &i)
			if out[parts[2]] == nil {
				out[parts[2]] = map[int][]ring.NodeID{}
			}
			out[parts[2]][i] = append(out[parts[2]][i], id)
		}
	}
	return out
}

// checkPlaced requires every slot of every object to be on its node and
// nowhere else.
func checkPlaced(t *testing.T, c *tcluster, o Options, objs map[string][]byte) {
	t.Helper()
	held := shardsOf(c, o.Self)
	for name := range objs {
		pl := mustPlace(t, c.ring.Load(), o.Self, name, o.K, o.M)
		for i, node := range pl {
			if got := held[name][i]; !slices.Equal(got, []ring.NodeID{node}) {
				t.Fatalf("%s shard %d is on %v, want only on %s", name, i, got, node)
			}
		}
	}
	if len(held) != len(objs) {
		t.Fatalf("shards of %d objects stored, want %d", len(held), len(objs))
	}
}

// TestRebuildLostNode: a node loses its whole shard store; Rebuild
// reconstructs exactly the shards it held, and afterwards every object has
// all k+m shards, good, on their nodes.
func TestRebuildLostNode(t *testing.T) {
	const k, m = 4, 2
	c := newCluster(t, 9, nil, localfsBucket, ServerOptions{})
	rec := newBadRecorder()
	o := c.options("n01", k, m)
	o.OnReconstruct = rec.record
	b := mustErasure(t, o)
	objs := putObjects(t, b, "n01/tables/", 40)
	checkPlaced(t, c, o, objs)

	// The victim: the node holding the most shards.
	victim, lost := ring.NodeID(""), 0
	for _, id := range c.ids() {
		if n := len(c.storedOn(id)); n > lost {
			victim, lost = id, n
		}
	}
	affected := map[string]bool{}
	for name := range objs {
		if slices.Contains(mustPlace(t, c.ring.Load(), "n01", name, k, m), victim) {
			affected[name] = true
		}
	}
	c.wipe(victim)
	// Degraded but readable; a lost data shard is reported.
	reported := 0
	for name, data := range objs {
		got, err := objectstore.ReadAll(context.Background(), b, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get(%s) with %s wiped: %v", name, victim, err)
		}
		if len(rec.take(name)) > 0 {
			reported++
		}
	}
	if reported == 0 {
		t.Fatal("no read reported a bad shard after the wipe")
	}

	var progress []RebuildProgress
	stats, err := Rebuild(context.Background(), o, RebuildOptions{Concurrency: 3, Progress: func(p RebuildProgress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatalf("Rebuild: %v (%+v)", err, stats)
	}
	t.Logf("%s lost %d shards; rebuild: %+v", victim, lost, stats)
	if stats.Objects != len(objs) || stats.ShardsRebuilt != lost || stats.ShardsMoved != 0 || stats.StraysDeleted != 0 ||
		stats.Repaired != len(affected) || stats.Healthy != len(objs)-len(affected) || stats.Failed != 0 || stats.Skipped != 0 {
		t.Fatalf("stats %+v: want %d objects, %d rebuilt shards in %d repaired objects", stats, len(objs), lost, len(affected))
	}
	if stats.BytesWritten == 0 || stats.BytesRead == 0 {
		t.Fatalf("no bytes counted: %+v", stats)
	}
	if len(progress) != len(objs)+1 || progress[0].Done != 0 || progress[len(progress)-1].Done != len(objs) || progress[len(progress)-1].Total != len(objs) {
		t.Fatalf("%d progress reports, last %+v", len(progress), progress[len(progress)-1])
	}
	checkPlaced(t, c, o, objs)
	for name, data := range objs {
		verifyRedundancy(t, o, name, data)
	}
	// Idempotent: nothing left to do.
	stats, err = Rebuild(context.Background(), o, RebuildOptions{})
	if err != nil || stats.Healthy != len(objs) || stats.BytesRead != 0 || stats.BytesWritten != 0 {
		t.Fatalf("second Rebuild: %+v, %v", stats, err)
	}
}

// TestRebuildRingChanges: after a join, a LEAVING member and a leave,
// Rebuild moves shards home (copies, no reconstruction, while their old
// node still has them), reconstructs those of a member that left, and
// deletes the strays.
func TestRebuildRingChanges(t *testing.T) {
	const k, m = 3, 2
	c := newCluster(t, 8, nil, memBucket, ServerOptions{})
	o := c.options("n01", k, m)
	b := mustErasure(t, o)
	objs := putObjects(t, b, "n01/tables/", 60)
	ctx := context.Background()

	// A join moves some slots to n09: their shards are now strays.
	c.join("n09", "")
	stats, err := Rebuild(ctx, o, RebuildOptions{})
	if err != nil || stats.ShardsMoved == 0 || stats.ShardsMoved != stats.StraysDeleted || stats.ShardsRebuilt != 0 {
		t.Fatalf("Rebuild after a join: %+v, %v", stats, err)
	}
	// Most moves go to n09; a few are cascades (a slot whose node another
	// slot of the object took now).
	if n := len(c.storedOn("n09")); n == 0 || n > stats.ShardsMoved {
		t.Fatalf("n09 holds %d shards, %d moved", n, stats.ShardsMoved)
	}
	checkPlaced(t, c, o, objs)

	// A LEAVING member is drained by copies.
	held := len(c.storedOn("n04"))
	c.setState("n04", ring.StateLeaving)
	stats, err = Rebuild(ctx, o, RebuildOptions{})
	if err != nil || stats.ShardsMoved < held || stats.ShardsRebuilt != 0 {
		t.Fatalf("Rebuild with n04 leaving (it held %d): %+v, %v", held, stats, err)
	}
	if got := c.storedOn("n04"); len(got) != 0 {
		t.Fatalf("the leaving node still holds %q", got)
	}
	checkPlaced(t, c, o, objs)
	c.leave("n04")

	// A member leaves without draining: its shards are rebuilt.
	held = len(c.storedOn("n06"))
	c.leave("n06")
	stats, err = Rebuild(ctx, o, RebuildOptions{})
	if err != nil || stats.ShardsRebuilt < held {
		t.Fatalf("Rebuild after n06 left (it held %d): %+v, %v", held, stats, err)
	}
	// n06 is off the ring: its old shards are not ours to see any more.
	c.stop("n06")
	checkPlaced(t, c, o, objs)
	for name, data := range objs {
		verifyRedundancy(t, o, name, data)
	}
}

// TestRebuildRepairsDamage: a damaged or stale shard on its node is
// replaced by a rebuilt one when Rebuild examines the object.
func TestRebuildRepairsDamage(t *testing.T) {
	const k, m = 4, 2
	c := newCluster(t, 8, nil, memBucket, ServerOptions{})
	o := c.options("n01", k, m)
	b := mustErasure(t, o)
	objs := putObjects(t, b, "t/", 5)
	ctx := context.Background()
	name := "t/003.sst"
	pl := mustPlace(t, c.ring.Load(), "n01", name, k, m)
	// Rebuild examines an object with a shard missing from its node; it
	// then finds the other bad ones too. Round 1: slot 1's payload is
	// damaged, slot 4 is missing.
	st1 := "n01/1/" + name
	p := objectstoretest.Get(t, c.node(pl[1]).bucket, st1)
	p[len(p)-1] ^= 0xff
	objectstoretest.Put(t, c.node(pl[1]).bucket, st1, p)
	if err := c.node(pl[4]).bucket.Delete(ctx, "n01/4/"+name); err != nil {
		t.Fatal(err)
	}
	stats, err := Rebuild(ctx, o, RebuildOptions{})
	if err != nil || stats.ShardsRebuilt != 2 || stats.Repaired != 1 {
		t.Fatalf("Rebuild (damaged shard): %+v, %v", stats, err)
	}
	verifyRedundancy(t, o, name, objs[name])
	// Round 2: slot 2 holds a shard of an earlier upload of the name
	// (another object id), slot 5 is missing.
	st2 := "n01/2/" + name
	put(t, b, name, objectstoretest.Data(77, len(objs[name])))
	stale := objectstoretest.Get(t, c.node(pl[2]).bucket, st2)
	put(t, b, name, objs[name])
	objectstoretest.Put(t, c.node(pl[2]).bucket, st2, stale)
	if err := c.node(pl[5]).bucket.Delete(ctx, "n01/5/"+name); err != nil {
		t.Fatal(err)
	}
	stats, err = Rebuild(ctx, o, RebuildOptions{})
	if err != nil || stats.ShardsRebuilt != 2 || stats.Repaired != 1 {
		t.Fatalf("Rebuild (stale shard): %+v, %v", stats, err)
	}
	verifyRedundancy(t, o, name, objs[name])

	// Fewer than k good shards: reported, nothing changed.
	for i := range m + 1 {
		if err := c.node(pl[i]).bucket.Delete(ctx, fmt.Sprintf("n01/%d/%s", i, name)); err != nil {
			t.Fatal(err)
		}
	}
	stats, err = Rebuild(ctx, o, RebuildOptions{})
	if err == nil || stats.Failed != 1 || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "3 good shards, 4 needed") {
		t.Fatalf("Rebuild of an unrecoverable object: %+v, %v", stats, err)
	}
}

// TestRebuildUnreachable: objects with a shard placed on an unreachable
// node are skipped; the others are repaired.
func TestRebuildUnreachable(t *testing.T) {
	const k, m = 2, 1
	c := newCluster(t, 7, nil, memBucket, ServerOptions{})
	o := c.options("n01", k, m)
	b := mustErasure(t, o)
	objs := putObjects(t, b, "u/", 30)
	c.wipe("n02")
	c.stop("n03")
	onN03 := 0
	for name := range objs {
		if slices.Contains(mustPlace(t, c.ring.Load(), "n01", name, k, m), "n03") {
			onN03++
		}
	}
	stats, err := Rebuild(context.Background(), o, RebuildOptions{})
	if err != nil || stats.Skipped != onN03 || !slices.Equal(stats.Unreachable, []ring.NodeID{"n03"}) || stats.ShardsRebuilt == 0 {
		t.Fatalf("Rebuild with n03 down: %+v, %v (%d objects on n03)", stats, err, onN03)
	}
	c.start("n03")
	stats, err = Rebuild(context.Background(), o, RebuildOptions{})
	if err != nil || stats.Skipped != 0 || len(stats.Unreachable) != 0 {
		t.Fatalf("Rebuild with n03 back: %+v, %v", stats, err)
	}
	checkPlaced(t, c, o, objs)
	for name, data := range objs {
		verifyRedundancy(t, o, name, data)
	}
}

// TestShardFormatMatchesErasure: shards rebuilt here are byte for byte
// those objectstore/erasure wrote, for every set of up to m lost shards.
func TestShardFormatMatchesErasure(t *testing.T) {
	for _, g := range []struct{ k, m int }{{4, 2}, {3, 3}, {1, 1}, {5, 1}} {
		for _, size := range []int{0, 1, 7, 1000, 100_003} {
			bs := make([]objectstore.Bucket, g.k+g.m)
			for i := range bs {
				bs[i] = objectstore.NewMemBucket()
			}
			eb, err := erasure.New(bs, erasure.Options{DataShards: g.k, ParityShards: g.m})
			if err != nil {
				t.Fatal(err)
			}
			put(t, eb, "o", objectstoretest.Data(uint64(size), size))
			orig := make([][]byte, len(bs))
			payloads := make([][]byte, len(bs))
			var h shardHeader
			for i := range bs {
				orig[i] = objectstoretest.Get(t, bs[i], "o")
				hi, p, err := parseShard(orig[i])
				if err != nil {
					t.Fatalf("RS(%d,%d) size %d shard %d: %v", g.k, g.m, size, i, err)
				}
				if int(hi.index) != i || int(hi.k) != g.k || hi.objectSize != uint64(size) {
					t.Fatalf("header %+v", hi)
				}
				payloads[i], h = p, hi
			}
			for _, lost := range lostSets(g.k+g.m, g.m) {
				in := slices.Clone(payloads)
				for _, i := range lost {
					in[i] = nil
				}
				got, err := rebuildShards(h, in, lost)
				if err != nil {
					t.Fatalf("RS(%d,%d) size %d lost %v: %v", g.k, g.m, size, lost, err)
				}
				for _, i := range lost {
					if !bytes.Equal(got[i], orig[i]) {
						t.Fatalf("RS(%d,%d) size %d lost %v: shard %d rebuilt differently", g.k, g.m, size, lost, i)
					}
				}
			}
			eb.Close()
		}
	}
	// Damage is detected, never a panic.
	bs := []objectstore.Bucket{objectstore.NewMemBucket(), objectstore.NewMemBucket(), objectstore.NewMemBucket()}
	eb, _ := erasure.New(bs, erasure.Options{DataShards: 2, ParityShards: 1})
	defer eb.Close()
	put(t, eb, "o", objectstoretest.Data(1, 999))
	good := objectstoretest.Get(t, bs[0], "o")
	for i := range good {
		p := slices.Clone(good)
		p[i] ^= 0x10
		if _, _, err := parseShard(p); !errors.Is(err, errBadShard) {
			t.Fatalf("flipped byte %d: %v", i, err)
		}
	}
	for n := range len(good) {
		if _, _, err := parseShard(good[:n]); !errors.Is(err, errBadShard) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	// Too few payloads, or a wrong one, fail the object CRC or RS.
	h, p0, _ := parseShard(good)
	p1 := objectstoretest.Get(t, bs[1], "o")[shardHeaderSize:]
	bad := slices.Clone(p1)
	bad[0] ^= 1
	if _, err := rebuildShards(h, [][]byte{p0, bad, nil}, []int{2}); err == nil {
		t.Fatal("a wrong payload went unnoticed")
	}
	if _, err := rebuildShards(h, [][]byte{p0, nil, nil}, []int{1, 2}); err == nil {
		t.Fatal("rebuilt from fewer than k payloads")
	}
}

// lostSets returns every non-empty subset of {0..n-1} with at most max
// elements.
func lostSets(n, max int) [][]int {
	var out [][]int
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) > 0 {
			out = append(out, slices.Clone(cur))
		}
		if len(cur) == max {
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
	return out
}
