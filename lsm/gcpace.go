package lsm

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Pacing of blob garbage collection.
//
// Compactions copy the live values of blob files that are mostly garbage
// into new blob files (docs/engine.md, "Garbage"). Unpaced, such a copy
// runs at memory speed: a 40 MiB rewrite takes ~100 ms of a core and hands
// the disk 40 MiB at once, and foreground writes wait behind it for CPU and
// for their WAL fsyncs. Under an overwrite-heavy load every replica does
// this at about the same moment. The garbage that a foreground write makes
// is at most the bytes it writes, and at the default BlobGarbageRatio (0.5)
// reclaiming a byte of garbage copies at most one live byte; so the copying
// keeps up if it may run at a multiple of the foreground write rate. The
// pacer therefore limits the value bytes compactions write to
//
//	max(BlobRewriteMinRate, BlobRewritePacing × recent foreground bytes/s)
//
// and lifts the limit while L0 holds twice L0CompactionThreshold tables:
// a paced compaction must never be what stalls writes (one compaction runs
// at a time, and the L0 compaction may carry a rewrite too).

// gcPacer limits the value bytes that compactions write.
type gcPacer struct {
	d       *DB
	limiter *rate.Limiter

	mu struct {
		sync.Mutex
		last     time.Time // of the last rate update
		lastUser uint64    // d.m.userBytes then
		userRate float64   // smoothed foreground bytes/s
	}
}

// gcPaceInterval is how often the pacer re-measures the foreground rate.
const gcPaceInterval = 250 * time.Millisecond

// newGCPacer returns d's pacer; wait sets its limiter's limit before use.
func newGCPacer(d *DB) *gcPacer {
	p := &gcPacer{d: d, limiter: rate.NewLimiter(rate.Inf, compactionBurst)}
	p.mu.last = d.opts.Clock.Now()
	return p
}

// l0Tables returns the number of L0 tables of the current version.
func (p *gcPacer) l0Tables() int {
	p.d.mu.Lock()
	defer p.d.mu.Unlock()
	if p.d.mu.current == nil {
		return 0 // closed
	}
	return len(p.d.mu.current.v.Levels[0])
}

// limit returns the current limit in bytes/s (rate.Inf: none).
func (p *gcPacer) limit() rate.Limit {
	o := p.d.opts
	if o.BlobRewritePacing <= 0 || p.l0Tables() >= 2*o.L0CompactionThreshold {
		return rate.Inf
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := o.Clock.Now()
	if dt := now.Sub(p.mu.last); dt >= gcPaceInterval {
		user := p.d.m.userBytes.Load()
		r := float64(user-p.mu.lastUser) / dt.Seconds()
		// NB: an even mix of the last interval and the history follows a
		// change of load within a second or so.
		p.mu.userRate = (p.mu.userRate + r) / 2
		p.mu.last, p.mu.lastUser = now, user
	}
	return rate.Limit(max(float64(o.BlobRewriteMinRate), o.BlobRewritePacing*p.mu.userRate))
}

// wait blocks until n more value bytes may be written, or the DB closes.
// REQUIRES: n <= compactionBurst.
func (p *gcPacer) wait(n int) error {
	l := p.limit()
	if l == rate.Inf {
		return nil
	}
	if p.limiter.Limit() != l {
		p.limiter.SetLimit(l)
	}
	return p.limiter.WaitN(p.d.closingCtx(), n)
}
