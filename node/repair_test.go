package node

import (
	"bytes"
	"fmt"
	"testing"
	"time"
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

// TestReadRepair: a read that sees a stale replica writes the newest
// version to it: before returning at ALL/QUORUM, in the background at ONE.
func TestReadRepair(t *testing.T) {
	c := startCluster(t, 3, nil)
	ctx := ctxT(t)
	key := []byte("rr")
	v1, err := c.nodes[0].Put(ctx, key, []byte("one"), All, 0)
	if err != nil {
		t.Fatal(err)
	}
	// n1 alone gets a newer version (as if the other replicas missed it).
	v2 := v1 + 1<<hlcNodeBits
	if err := c.nodes[0].SetLocalForTesting(key, []byte("two"), v2); err != nil {
		t.Fatal(err)
	}
	val, ver, err := c.nodes[1].Get(ctx, key, All)
	if err != nil || string(val) != "two" || ver != v2 {
		t.Fatalf("ALL get = %q@%d, %v; want two@%d", val, ver, err, v2)
	}
	// Blocking: repaired before Get returned.
	for _, i := range []int{1, 2} {
		if e, err := c.nodes[i].ReadLocalForTesting(key); err != nil || e.Version != v2 {
			t.Fatalf("n%d after ALL read: %q@%d, %v; want version %d", i+1, e.Value, e.Version, err, v2)
		}
	}
	// Background at ONE.
	v3 := v2 + 1<<hlcNodeBits
	if err := c.nodes[0].SetLocalForTesting(key, []byte("three"), v3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.nodes[1].Get(ctx, key, One); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "background read repair", func() bool {
		for _, i := range []int{1, 2} {
			if e, err := c.nodes[i].ReadLocalForTesting(key); err != nil || e.Version != v3 {
				return false
			}
		}
		return true
	})
}
