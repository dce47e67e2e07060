package node

import (
	"sync"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm"
)

type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestHLCMonotonic(t *testing.T) {
	clk := &manualClock{t: time.UnixMilli(1_700_000_000_000)}
	h := NewHLC(clk, "n1")
	var last uint64
	for i := range 5000 { // > 1024 in one millisecond: the counter carries
		v := h.Next()
		if v <= last {
			t.Fatalf("step %d: version %d not above %d", i, v, last)
		}
		last = v
	}
	// The wall clock going backwards does not move versions backwards.
	clk.Advance(-time.Hour)
	if v := h.Next(); v <= last {
		t.Fatalf("after clock step back: %d <= %d", v, last)
	}
	// The physical part matches the engine's decoding.
	clk.Advance(2 * time.Hour)
	v := h.Next()
	if got, want := lsm.DefaultVersionTime(v), clk.Now(); !got.Equal(want) {
		t.Fatalf("DefaultVersionTime = %v, want %v", got, want)
	}
	if !VersionTime(v).Equal(lsm.DefaultVersionTime(v)) {
		t.Fatal("VersionTime differs from lsm.DefaultVersionTime")
	}
}

// TestHLCLastSeenVersion checks invariant 2: a client's second write through
// another coordinator in the same millisecond wins when the client hands
// back the version of its first.
func TestHLCLastSeenVersion(t *testing.T) {
	clk := &manualClock{t: time.UnixMilli(1_700_000_000_000)}
	a, b := NewHLC(clk, "n1"), NewHLC(clk, "n2")
	for range 100 {
		a.Next() // a is busier: its counter is ahead in this millisecond
	}
	first := a.Next()
	if second := b.Next(); second > first {
		t.Fatalf("without the last-seen version b's write %d should lose to a's %d in this setup", second, first)
	}
	b.Observe(first)
	if second := b.Next(); second <= first {
		t.Fatalf("second write %d not above first %d after Observe", second, first)
	}
	// The dev cluster's ids (n1, n2, n3) get distinct tie-breaks.
	c := NewHLC(clk, "n3")
	if a.node == b.node || a.node == c.node || b.node == c.node {
		t.Fatalf("tie-break bits of n1, n2, n3 collide: %d %d %d", a.node, b.node, c.node)
	}
}

func TestHLCConcurrent(t *testing.T) {
	h := NewHLC(&manualClock{t: time.UnixMilli(1)}, "n")
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				v := h.Next()
				mu.Lock()
				if seen[v] {
					t.Errorf("duplicate version %d", v)
				}
				seen[v] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
