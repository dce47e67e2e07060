package shards

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/erasure"
	"github.com/tierkv/tierkv/objectstore/objectstoretest"
	"github.com/tierkv/tierkv/ring"
)

// TestAcceptance runs objectstore's acceptance suite on the erasure bucket
// over peers: 8 in-process nodes with gRPC servers, RS(4, 2). Every
// subtest gets a new owner (Self), whose namespace on the peers is empty:
// that also checks that owners do not see each other's objects. Nothing
// is excluded.
func TestAcceptance(t *testing.T) {
	c := newCluster(t, 8, nil, memBucket, ServerOptions{})
	var owners atomic.Int64
	objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket {
		self := ring.NodeID(fmt.Sprintf("owner%d", owners.Add(1)))
		b, err := NewErasure(c.options(self, 4, 2))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestAcceptanceLocalFS: the same over localfs shard stores (what the
// node uses), RS(3, 2), with Self a ring member that must hold none of its
// own shards.
func TestAcceptanceLocalFS(t *testing.T) {
	c := newCluster(t, 7, nil, localfsBucket, ServerOptions{})
	var n atomic.Int64
	objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket {
		// A fresh namespace per subtest: the node ids are the owners, and
		// the ring grows by one member (the owner) each time.
		self := ring.NodeID(fmt.Sprintf("self%d", n.Add(1)))
		c.join(self, "")
		b, err := NewErasure(c.options(self, 3, 2))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if got := c.storedOn(self); len(got) != 0 {
				t.Errorf("%s holds shards: %q", self, got)
			}
		})
		return b
	})
}

func TestOptionsValidation(t *testing.T) {
	c := newCluster(t, 3, nil, memBucket, ServerOptions{})
	good := c.options("n01", 2, 1)
	for _, tc := range []struct {
		what string
		mod  func(o *Options)
	}{
		{"empty Self", func(o *Options) { o.Self = "" }},
		{"Self with /", func(o *Options) { o.Self = "a/b" }},
		{"Self ..", func(o *Options) { o.Self = ".." }},
		{"no Ring", func(o *Options) { o.Ring = nil }},
		{"no Conn", func(o *Options) { o.Conn = nil }},
		{"K 0", func(o *Options) { o.K = 0 }},
		{"M 0", func(o *Options) { o.M = 0 }},
		{"K+M 257", func(o *Options) { o.K, o.M = 200, 57 }},
	} {
		o := good
		tc.mod(&o)
		if _, err := NewErasure(o); err == nil {
			t.Errorf("%s: NewErasure accepted it", tc.what)
		}
		if _, err := Rebuild(context.Background(), o, RebuildOptions{}); err == nil {
			t.Errorf("%s: Rebuild accepted it", tc.what)
		}
	}
	// A name that is valid but does not fit after "<Self>/<i>/": each
	// slot refuses it (erasure reports the shards' errors).
	f, err := newFleet(good)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", objectstore.MaxNameLen-3)
	for _, op := range []func(s *slot) error{
		func(s *slot) error { return s.Put(context.Background(), long, strings.NewReader("x"), 1) },
		func(s *slot) error { _, err := s.Get(context.Background(), long); return err },
		func(s *slot) error { return s.Delete(context.Background(), long) },
	} {
		if err := op(&slot{f: f, i: 0}); !errors.Is(err, objectstore.ErrInvalidName) {
			t.Fatalf("a %d-byte name = %v, want ErrInvalidName", len(long), err)
		}
	}
	// Alone on the ring: no peer to place on.
	solo := newCluster(t, 1, nil, memBucket, ServerOptions{})
	sb := mustErasure(t, solo.options("n01", 2, 1))
	err = sb.Put(context.Background(), "x", strings.NewReader("x"), 1)
	if err == nil || !strings.Contains(err.Error(), ErrNoPeers.Error()) {
		t.Fatalf("Put with no peers = %v", err)
	}
}

// TestShardLayout: shard i of X is "<Self>/<i>/X" on Placement(X)[i], and
// only there.
func TestShardLayout(t *testing.T) {
	const k, m = 4, 2
	c := newCluster(t, 8, nil, memBucket, ServerOptions{})
	o := c.options("n02", k, m)
	b := mustErasure(t, o)
	names := []string{"n02/tables/000001.sst", "n02/manifests/00000000000000000001", "a"}
	for i, n := range names {
		put(t, b, n, objectstoretest.Data(uint64(i), 5000))
	}
	want := map[ring.NodeID][]string{}
	for _, n := range names {
		for i, node := range mustPlace(t, c.ring.Load(), "n02", n, k, m) {
			want[node] = append(want[node], fmt.Sprintf("n02/%d/%s", i, n))
		}
	}
	for _, id := range c.ids() {
		got := c.storedOn(id)
		w := slices.Sorted(slices.Values(want[id]))
		if !slices.Equal(got, w) {
			t.Errorf("%s holds %q, want %q", id, got, w)
		}
	}
	if got := c.storedOn("n02"); len(got) != 0 {
		t.Fatalf("Self holds shards: %q", got)
	}
}

// TestDegradedReads: with m nodes of an object's placement stopped, Get,
// GetRange, Attributes and List still succeed and report the bad shards;
// with m+1 stopped, Get fails with an error naming the object.
func TestDegradedReads(t *testing.T) {
	const k, m = 4, 2
	c := newCluster(t, 8, nil, memBucket, ServerOptions{})
	rec := newBadRecorder()
	o := c.options("n01", k, m)
	o.OnReconstruct = rec.record
	b := mustErasure(t, o)
	ctx := context.Background()
	objs := map[string][]byte{}
	var names []string
	for i := range 10 {
		name := fmt.Sprintf("n01/tables/%03d.sst", i)
		objs[name] = objectstoretest.Data(uint64(i), 1000+i*7777)
		names = append(names, name)
		put(t, b, name, objs[name])
	}
	const target = "n01/tables/004.sst"
	pl := mustPlace(t, c.ring.Load(), "n01", target, k, m)
	// Data slots 0 and 1 down: erasure reads the parity and reconstructs.
	c.stop(pl[0])
	c.stop(pl[1])
	got, err := objectstore.ReadAll(ctx, b, target)
	if err != nil || !bytes.Equal(got, objs[target]) {
		t.Fatalf("Get with %d nodes down: %v", m, err)
	}
	if bad := rec.take(target); !slices.Equal(bad, []int{0, 1}) {
		t.Fatalf("reported bad shards %v, want [0 1]", bad)
	}
	rc, err := b.GetRange(ctx, target, 100, 50)
	if p := readAll(t, rc, err); !bytes.Equal(p, objs[target][100:150]) {
		t.Fatal("GetRange with m nodes down differs")
	}
	if a, err := b.Attributes(ctx, target); err != nil || a.Size != int64(len(objs[target])) {
		t.Fatalf("Attributes with m nodes down = %+v, %v", a, err)
	}
	// Every object is still listed (at most m nodes are unreachable).
	if got := objectstoretest.ListAll(t, b, "n01/", 3); !slices.Equal(got, names) {
		t.Fatalf("List with m nodes down = %q", got)
	}
	for _, n := range names {
		if got, err := objectstore.ReadAll(ctx, b, n); err != nil || !bytes.Equal(got, objs[n]) {
			t.Fatalf("Get(%s) with m nodes down: %v", n, err)
		}
	}

	// One more: too many bad shards.
	c.stop(pl[2])
	_, err = b.Get(ctx, target)
	if !errors.Is(err, erasure.ErrTooManyBadShards) {
		t.Fatalf("Get with m+1 nodes down = %v, want ErrTooManyBadShards", err)
	}
	for _, want := range []string{target, string(pl[0]), string(pl[1]), string(pl[2])} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not name %s", err, want)
		}
	}
	var se *erasure.ShardsError
	if !errors.As(err, &se) || !slices.Equal(se.BadIndexes(), []int{0, 1, 2}) {
		t.Fatalf("bad shards %v, want [0 1 2]", err)
	}
	// List cannot vouch for completeness with m+1 nodes unreachable.
	_, _, err = b.List(ctx, "", "", 0)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("List with m+1 nodes down = %v, want ErrUnreachable", err)
	}

	// Back up: full health.
	rec.take(target) // what the reads above reported
	for _, id := range pl[:3] {
		c.start(id)
	}
	got, err = objectstore.ReadAll(ctx, b, target)
	if err != nil || !bytes.Equal(got, objs[target]) {
		t.Fatalf("Get after the nodes came back: %v", err)
	}
	if bad := rec.take(target); len(bad) != 0 {
		t.Fatalf("bad shards %v after the nodes came back", bad)
	}
}

// TestPutNeedsEveryNode: a Put fails if a node of its placement is down,
// and names the shard; nothing half-written is readable as the object.
func TestPutNeedsEveryNode(t *testing.T) {
	const k, m = 2, 1
	c := newCluster(t, 5, nil, memBucket, ServerOptions{})
	b := mustErasure(t, c.options("n01", k, m))
	name := "obj"
	pl := mustPlace(t, c.ring.Load(), "n01", name, k, m)
	c.stop(pl[1])
	err := b.Put(context.Background(), name, strings.NewReader("data"), 4)
	var se *erasure.ShardsError
	if !errors.As(err, &se) || !slices.Equal(se.BadIndexes(), []int{1}) || !strings.Contains(err.Error(), string(pl[1])) {
		t.Fatalf("Put with slot 1's node down = %v", err)
	}
}

// TestSearchAfterRingChange: after a join moved more than m slots of an
// object, the object still reads, with no bad shard, because a slot looks
// for its shard where the earlier ring put it; without the search it
// does not.
func TestSearchAfterRingChange(t *testing.T) {
	const k, m = 4, 2
	c := newCluster(t, 8, nil, memBucket, ServerOptions{})
	before := c.ring.Load()
	after := addMember(t, before, "n09", "")
	// Find objects of which a join of n09 moves more than m slots.
	var names []string
	for i := 0; len(names) < 3 && i < 100000; i++ {
		name := fmt.Sprintf("n01/tables/%d", i)
		a, b := mustPlace(t, before, "n01", name, k, m), mustPlace(t, after, "n01", name, k, m)
		moved := 0
		for s := range a {
			if a[s] != b[s] {
				moved++
			}
		}
		if moved > m {
			names = append(names, name)
		}
	}
	if len(names) < 3 {
		t.Fatalf("found only %d objects with more than %d moved shards", len(names), m)
	}
	rec := newBadRecorder()
	o := c.options("n01", k, m)
	o.OnReconstruct = rec.record
	b := mustErasure(t, o)
	noSearch := o
	noSearch.SearchWidth = -1
	nb := mustErasure(t, noSearch)
	data := objectstoretest.Data(9, 30000)
	for _, n := range names {
		put(t, b, n, data)
	}
	c.join("n09", "") // the ring now places them elsewhere
	ctx := context.Background()
	for _, n := range names {
		got, err := objectstore.ReadAll(ctx, b, n)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get(%s) after the join: %v", n, err)
		}
		if bad := rec.take(n); len(bad) != 0 {
			t.Fatalf("Get(%s) after the join reported bad shards %v", n, bad)
		}
		if _, err := nb.Get(ctx, n); !errors.Is(err, erasure.ErrTooManyBadShards) {
			t.Fatalf("Get(%s) without the search = %v, want ErrTooManyBadShards", n, err)
		}
	}
	if got := objectstoretest.ListAll(t, b, "", 0); !slices.Equal(got, slices.Sorted(slices.Values(names))) {
		t.Fatalf("List after the join = %q", got)
	}
	// Delete finds them where they are too.
	for _, n := range names {
		if err := b.Delete(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range c.ids() {
		if got := c.storedOn(id); len(got) != 0 {
			t.Fatalf("after Delete, %s still holds %q", id, got)
		}
	}
}

// TestListMergesPeers: a slot's listing merges the peers' pages in order,
// with small pages on both levels.
func TestListMergesPeers(t *testing.T) {
	c := newCluster(t, 6, nil, memBucket, ServerOptions{MaxListBytes: 64})
	b := mustErasure(t, c.options("n01", 2, 2))
	var want []string
	for i := range 150 {
		n := fmt.Sprintf("l/%02d/%04d", i%7, i)
		want = append(want, n)
		put(t, b, n, []byte(n))
	}
	slices.Sort(want)
	for _, limit := range []int{1, 2, 7, 1000} {
		if got := objectstoretest.ListAll(t, b, "l/", limit); !slices.Equal(got, want) {
			t.Fatalf("ListAll(limit %d) returned %d names, want %d", limit, len(got), len(want))
		}
	}
	if got := objectstoretest.ListAll(t, b, "l/03/", 5); len(got) != 21 {
		t.Fatalf("ListAll(l/03/) = %d names, want 21", len(got))
	}
}
