package lsm

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tierkv/tierkv/lsm/vfs"
)

// TestGCPacerLimit checks the pacer's limit: the floor while idle, a
// multiple of the measured foreground rate under load, none while L0 is
// backed up or with pacing off.
func TestGCPacerLimit(t *testing.T) {
	clock := newManualClock()
	opts := smallOptions(vfs.NewMemFS(), Leveled, clock)
	opts.DisableAutomaticCompactions = true
	opts.BlobRewriteMinRate = 1 << 20
	d, err := Open("db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	p := d.gc

	// Idle: the floor.
	clock.Advance(time.Second)
	if l := p.limit(); l != rate.Limit(1<<20) {
		t.Fatalf("idle limit %v, want the floor %d", l, 1<<20)
	}
	// 8 MiB/s of foreground writes for a while: the smoothed rate
	// approaches 8 MiB/s and the limit 2 x that.
	for range 20 {
		d.m.userBytes.Add(2 << 20)
		clock.Advance(gcPaceInterval)
		p.limit()
	}
	if l := float64(p.limit()); l < 15.9*(1<<20) || l > 16.1*(1<<20) {
		t.Fatalf("limit under 8 MiB/s of writes is %.1f MiB/s, want 16", l/(1<<20))
	}
	// The load stops: back to the floor within a few intervals.
	for range 20 {
		clock.Advance(gcPaceInterval)
		p.limit()
	}
	if l := p.limit(); l != rate.Limit(1<<20) {
		t.Fatalf("limit after the load stopped %v, want the floor", l)
	}
	// L0 backed up: no limit, so the compaction that drains it is not held.
	for i := range 2 * opts.L0CompactionThreshold {
		if err := d.Set([]byte(fmt.Sprintf("k%d", i)), []byte("v"), uint64(i+1), NoSync); err != nil {
			t.Fatal(err)
		}
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
		if l := p.limit(); (i+1 < 2*opts.L0CompactionThreshold) != (l != rate.Inf) {
			t.Fatalf("limit with %d L0 tables is %v", i+1, l)
		}
	}
	if err := d.Compact(); err != nil {
		t.Fatal(err)
	}
	if l := p.limit(); l != rate.Limit(1<<20) {
		t.Fatalf("limit once L0 is compacted %v, want the floor", l)
	}
	d.opts.BlobRewritePacing = -1
	if l := p.limit(); l != rate.Inf {
		t.Fatalf("limit with pacing off %v, want none", l)
	}
}

// TestOptionsBlobRewriteMinRate: a non-positive floor is refused.
func TestOptionsBlobRewriteMinRate(t *testing.T) {
	opts := smallOptions(vfs.NewMemFS(), Leveled, newManualClock())
	opts.BlobRewriteMinRate = -1
	if _, err := Open("db", opts); err == nil {
		t.Fatal("Open accepted BlobRewriteMinRate -1")
	}
}

// TestBlobRewriteIsPaced checks that the values a compaction copies out of
// a mostly-garbage blob file go through the pacer: at a 1 MiB/s floor, a
// rewrite of 1.5 MiB takes at least a second (the limiter's 256 KiB burst
// aside). Unpaced it takes milliseconds. NB: a lower bound on time only;
// a loaded machine makes it slower, never faster.
func TestBlobRewriteIsPaced(t *testing.T) {
	opts := smallOptions(vfs.NewMemFS(), Leveled, newManualClock())
	opts.DisableAutomaticCompactions = true
	opts.MemTableSize = 16 << 20
	opts.WALPreallocateSize = 0
	opts.BlobRewriteMinRate = 1 << 20
	d, err := Open("db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	value := func(k, gen int) []byte { return bytes.Repeat([]byte{byte(k), byte(gen)}, 5<<10) } // 10 KiB
	put := func(k, gen int) {
		if err := d.Set([]byte(fmt.Sprintf("k%04d", k)), value(k, gen), uint64(gen*1000+k), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	// 400 values in one blob file, then 250 of them overwritten: the file
	// is 62.5% garbage and 150 values (1.5 MiB) are live.
	for k := range 400 {
		put(k, 1)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	for k := range 250 {
		put(k, 2)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	before := d.Metrics().BlobRewriteBytes
	start := time.Now()
	if err := d.Compact(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if got := d.Metrics().BlobRewriteBytes - before; got < 150*10<<10 {
		t.Fatalf("compaction rewrote %d value bytes, want the 1.5 MiB still live", got)
	}
	if elapsed < time.Second {
		t.Fatalf("rewriting 1.5 MiB at a 1 MiB/s pace took %v: not paced", elapsed)
	}
	for k := range 400 {
		gen := 1
		if k < 250 {
			gen = 2
		}
		if v, _, err := d.Get([]byte(fmt.Sprintf("k%04d", k))); err != nil || !bytes.Equal(v, value(k, gen)) {
			t.Fatalf("k%04d after the rewrite: err %v", k, err)
		}
	}
}
