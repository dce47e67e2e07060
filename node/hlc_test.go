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
	h := NewHLC(clk, 1)
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
	a, b := NewHLC(clk, 0), NewHLC(clk, 1)
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
	// Two coordinators in the same millisecond with the same counter: the
	// distinct clock ids keep the versions distinct, and the client's
	// last-seen version orders them either way round.
	clk.Advance(time.Second)
	x, y := NewHLC(clk, 5), NewHLC(clk, 6)
	vx, vy := x.Next(), y.Next()
	if vx>>hlcNodeBits != vy>>hlcNodeBits || vx == vy {
		t.Fatalf("same ms and counter: %x %x", vx, vy)
	}
	x.Observe(vy)
	if v := x.Next(); v <= vy {
		t.Fatalf("x after observing y's %x: %x", vy, v)
	}
	// A clock id change (a re-pick after a collision) keeps versions
	// increasing.
	last := y.Next()
	y.SetClockID(0)
	if v := y.Next(); v <= last || v&hlcNodeMask != 0 {
		t.Fatalf("after SetClockID(0): %x, last %x", v, last)
	}
}

func TestHLCConcurrent(t *testing.T) {
	h := NewHLC(&manualClock{t: time.UnixMilli(1)}, 3)
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
