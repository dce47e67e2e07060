package node

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestHintedHandoff: writes while a replica is down leave hints on the
// coordinator, which are delivered once the replica is back (checked by
// reading that replica's engine alone).
func TestHintedHandoff(t *testing.T) {
	c := startCluster(t, 3, nil)
	ctx := ctxT(t)
	c.stop(2)
	c.waitDown(2)
	const keys = 50
	for k := range keys {
		if _, err := c.nodes[k%2].Put(ctx, fmt.Appendf(nil, "h%02d", k), fmt.Appendf(nil, "v%d", k), Quorum, 0); err != nil {
			t.Fatal(err)
		}
	}
	pending := c.nodes[0].HintsPending() + c.nodes[1].HintsPending()
	if pending != keys {
		t.Fatalf("%d hints pending, want %d", pending, keys)
	}
	c.start(2)
	c.waitReady()
	waitFor(t, 20*time.Second, "hints delivered", func() bool {
		return c.nodes[0].HintsPending()+c.nodes[1].HintsPending() == 0
	})
	for k := range keys {
		e, err := c.nodes[2].ReadLocalForTesting(fmt.Appendf(nil, "h%02d", k))
		if err != nil || !bytes.Equal(e.Value, fmt.Appendf(nil, "v%d", k)) {
			t.Fatalf("n3 alone: h%02d = %q, %v", k, e.Value, err)
		}
	}
	t.Logf("%d hints delivered after the restart", keys)
}

// TestReadRepair: a QUORUM or ALL read that finds an older version on a
// replica it asked writes the newest one to it before returning; when only
// a digest carried the newest version, the value is read from that replica.
func TestReadRepair(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) { cfg.SpeculativeRetry = -1 })
	ctx := ctxT(t)
	key := []byte("rr")
	v1, err := c.nodes[0].Put(ctx, key, []byte("one"), All, 0)
	if err != nil {
		t.Fatal(err)
	}
	// n1 alone gets a newer version (as if the other replicas missed it).
	// n2 coordinates at ALL: its own read gives the value, n1's and n3's
	// digests; n1's digest is the newest.
	v2 := v1 + 1<<hlcNodeBits
	if err := c.nodes[0].SetLocalForTesting(key, []byte("two"), v2); err != nil {
		t.Fatal(err)
	}
	mismatches := testutil.ToFloat64(c.nodes[1].m.digestMismatches)
	val, ver, err := c.nodes[1].Get(ctx, key, All)
	if err != nil || string(val) != "two" || ver != v2 {
		t.Fatalf("ALL get = %q@%d, %v; want two@%d", val, ver, err, v2)
	}
	if d := testutil.ToFloat64(c.nodes[1].m.digestMismatches) - mismatches; d != 1 {
		t.Errorf("%v digest mismatches, want 1 (the newest version came in n1's digest)", d)
	}
	// Blocking: repaired before Get returned.
	for _, i := range []int{1, 2} {
		if e, err := c.nodes[i].ReadLocalForTesting(key); err != nil || e.Version != v2 || string(e.Value) != "two" {
			t.Fatalf("n%d after ALL read: %q@%d, %v; want two@%d", i+1, e.Value, e.Version, err, v2)
		}
	}
	// QUORUM, coordinated by n1, asks n1 and one other replica; n1 holds a
	// newer version again, and the other one is repaired.
	v3 := v2 + 1<<hlcNodeBits
	if err := c.nodes[0].SetLocalForTesting(key, []byte("three"), v3); err != nil {
		t.Fatal(err)
	}
	live, _, _, err := c.nodes[0].liveOwners(key, Quorum, false)
	if err != nil {
		t.Fatal(err)
	}
	asked := c.byID(c.nodes[0].readOrder(live)[1])
	if val, ver, err := c.nodes[0].Get(ctx, key, Quorum); err != nil || string(val) != "three" || ver != v3 {
		t.Fatalf("QUORUM get = %q@%d, %v; want three@%d", val, ver, err, v3)
	}
	if e, err := asked.ReadLocalForTesting(key); err != nil || e.Version != v3 || string(e.Value) != "three" {
		t.Fatalf("%s after QUORUM read: %q@%d, %v; want three@%d", asked.ID(), e.Value, e.Version, err, v3)
	}
}

// TestReadsAskWhatTheLevelNeeds: ONE reads this node's copy alone; QUORUM
// reads it and one digest; no value crosses the network for a read that
// agrees.
func TestReadsAskWhatTheLevelNeeds(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) { cfg.SpeculativeRetry = -1 })
	ctx := ctxT(t)
	key := []byte("k")
	if _, err := c.nodes[2].Put(ctx, key, []byte("v"), All, 0); err != nil {
		t.Fatal(err)
	}
	n := c.nodes[0]
	for _, tc := range []struct {
		level        Consistency
		data, digest float64
	}{{One, 1, 0}, {Quorum, 1, 1}, {All, 1, 2}} {
		data, digest := testutil.ToFloat64(n.m.dataReads), testutil.ToFloat64(n.m.digestReads)
		if val, _, err := n.Get(ctx, key, tc.level); err != nil || string(val) != "v" {
			t.Fatalf("%v get = %q, %v", tc.level, val, err)
		}
		if d, g := testutil.ToFloat64(n.m.dataReads)-data, testutil.ToFloat64(n.m.digestReads)-digest; d != tc.data || g != tc.digest {
			t.Errorf("%v get asked %v replicas for the value and %v for a digest; want %v and %v", tc.level, d, g, tc.data, tc.digest)
		}
	}
}

// TestReadSpeculativeRetry: a QUORUM read whose digest replica hangs asks
// the third replica after speculative_retry instead of waiting for it.
func TestReadSpeculativeRetry(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.SpeculativeRetry = 20 * time.Millisecond
		cfg.ReplicaTimeout = time.Minute // only speculation can end the wait
	})
	ctx := ctxT(t)
	key := []byte("spec")
	if _, err := c.nodes[0].Put(ctx, key, []byte("v"), All, 0); err != nil {
		t.Fatal(err)
	}
	live, _, _, err := c.nodes[0].liveOwners(key, Quorum, false)
	if err != nil {
		t.Fatal(err)
	}
	slow := c.byID(c.nodes[0].readOrder(live)[1])
	release := make(chan struct{})
	hangReads(slow, release)
	defer close(release)
	before := testutil.ToFloat64(c.nodes[0].m.speculativeReads)
	if val, _, err := c.nodes[0].Get(ctx, key, Quorum); err != nil || string(val) != "v" {
		t.Fatalf("QUORUM get with %s hanging = %q, %v", slow.ID(), val, err)
	}
	if d := testutil.ToFloat64(c.nodes[0].m.speculativeReads) - before; d != 1 {
		t.Errorf("%v speculative reads, want 1", d)
	}
	slow.readHookForTesting.Store(nil)
}

// TestLateReadRepairedToNewestDigest: a QUORUM read whose digest replica
// hangs speculates to the third replica, whose digest is the newest
// version; Get reads that value in. The hung replica answers while Get is
// reading it, and is repaired in the background to the value Get
// returned, not to the older one the coordinator held when the answers
// were first gathered.
func TestLateReadRepairedToNewestDigest(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.SpeculativeRetry = 20 * time.Millisecond
		cfg.ReplicaTimeout = time.Minute
	})
	ctx := ctxT(t)
	key := []byte("late")
	v1, err := c.nodes[0].Put(ctx, key, []byte("one"), All, 0)
	if err != nil {
		t.Fatal(err)
	}
	live, _, _, err := c.nodes[0].liveOwners(key, Quorum, false)
	if err != nil {
		t.Fatal(err)
	}
	order := c.nodes[0].readOrder(live)
	slow, newest := c.byID(order[1]), c.byID(order[2])
	v2 := v1 + 1<<hlcNodeBits
	if err := newest.SetLocalForTesting(key, []byte("two"), v2); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	hangReads(slow, release)
	var newestReads atomic.Int32
	answerLate := func(context.Context, [][]byte) {
		if newestReads.Add(1) == 2 { // the value read after its digest
			close(release)
			time.Sleep(100 * time.Millisecond) // the late answer arrives meanwhile
		}
	}
	newest.readHookForTesting.Store(&answerLate)
	background := testutil.ToFloat64(c.nodes[0].m.repairs.WithLabelValues("background"))
	val, ver, err := c.nodes[0].Get(ctx, key, Quorum)
	if err != nil || string(val) != "two" || ver != v2 {
		t.Fatalf("QUORUM get = %q@%d, %v; want two@%d", val, ver, err, v2)
	}
	slow.readHookForTesting.Store(nil)
	newest.readHookForTesting.Store(nil)
	if n := newestReads.Load(); n != 2 {
		t.Fatalf("%s served %d reads, want 2 (a digest, then the value)", newest.ID(), n)
	}
	waitFor(t, 10*time.Second, "the late replica repaired", func() bool {
		e, err := slow.ReadLocalForTesting(key)
		return err == nil && e.Version == v2 && string(e.Value) == "two"
	})
	if d := testutil.ToFloat64(c.nodes[0].m.repairs.WithLabelValues("background")) - background; d != 1 {
		t.Errorf("%v background repairs, want 1", d)
	}
}

// hangReads makes n's Replica service hold every read until release is
// closed (or the read's context ends).
func hangReads(n *Node, release <-chan struct{}) {
	hang := func(ctx context.Context, _ [][]byte) {
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	n.readHookForTesting.Store(&hang)
}
