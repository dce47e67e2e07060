package lsm

import (
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
	d.l0Tables.Store(int64(2 * opts.L0CompactionThreshold))
	if l := p.limit(); l != rate.Inf {
		t.Fatalf("limit with L0 backed up %v, want none", l)
	}
	d.l0Tables.Store(0)
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
