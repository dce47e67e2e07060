// Package phi is a phi accrual failure detector (Hayashibara, Défago,
// Yared and Katayama, "The φ Accrual Failure Detector", SRDS 2004), in the
// form used by Cassandra and Akka.
//
// For every peer the detector keeps a sliding window of heartbeat
// inter-arrival times. Given the time since the last heartbeat it computes
//
//	phi = -log10(P(next heartbeat arrives later than now))
//
// under a normal distribution fitted to the window, with the mean increased
// by an acceptable pause and the standard deviation floored (as in Akka), so
// that phi = 8 means the peer would be alive with probability 1e-8. A peer is
// Up while phi < Threshold.
//
// The package is pure logic: it starts no goroutines and reads time only
// from the injected Clock, so tests drive it with a manual clock. The gossip
// layer feeds it heartbeats and calls Update on every tick.
//
//	d, _ := phi.New(&phi.Options{Clock: clock})
//	d.Heartbeat("n2")          // on every heartbeat from n2
//	for _, tr := range d.Update() { // on every tick
//		log.Printf("%s up=%v", tr.Peer, tr.Up)
//	}
package phi

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Clock tells the detector the time. It must be monotonic enough that Now
// never goes backwards by more than the jitter the caller tolerates.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// WallClock is the real-time Clock.
var WallClock Clock = wallClock{}

// Options configures a Detector.
type Options struct {
	// Threshold is the phi above which a peer is Down. Default 8 (as in
	// Cassandra's phi_convict_threshold and Akka): with a normal model, a
	// false suspicion has odds of about 1e-8 per check.
	Threshold float64
	// WindowSize is the number of inter-arrival samples kept per peer.
	// Default 1000 (Cassandra and Akka).
	WindowSize int
	// MinStdDev floors the standard deviation of the window, so that very
	// regular heartbeats do not make the detector hair-triggered.
	// Default 100ms (Akka).
	MinStdDev time.Duration
	// AcceptableHeartbeatPause is added to the mean inter-arrival time: a
	// pause this long (GC, a slow gossip hop) is not suspicious.
	// Default 3s (Akka cluster).
	AcceptableHeartbeatPause time.Duration
	// FirstHeartbeatEstimate seeds a new peer's window (with mean this and
	// standard deviation a quarter of it) so that phi is meaningful from the
	// first heartbeat. Set it to the heartbeat interval. Default 1s.
	FirstHeartbeatEstimate time.Duration
	// MaxSampleInterval: inter-arrival times longer than this are not added
	// to the window (as in Cassandra's fd_max_interval), so that a peer that
	// was paused or partitioned does not come back with a window that makes
	// it slow to suspect. Default 5 * FirstHeartbeatEstimate.
	MaxSampleInterval time.Duration
	// Clock is the time source. Default WallClock.
	Clock Clock
}

// EnsureDefaults fills zero fields with defaults and returns o. It accepts a
// nil receiver.
func (o *Options) EnsureDefaults() *Options {
	if o == nil {
		o = &Options{}
	}
	if o.Threshold == 0 {
		o.Threshold = 8
	}
	if o.WindowSize == 0 {
		o.WindowSize = 1000
	}
	if o.MinStdDev == 0 {
		o.MinStdDev = 100 * time.Millisecond
	}
	if o.AcceptableHeartbeatPause == 0 {
		o.AcceptableHeartbeatPause = 3 * time.Second
	}
	if o.FirstHeartbeatEstimate == 0 {
		o.FirstHeartbeatEstimate = time.Second
	}
	if o.MaxSampleInterval == 0 {
		o.MaxSampleInterval = 5 * o.FirstHeartbeatEstimate
	}
	if o.Clock == nil {
		o.Clock = WallClock
	}
	return o
}

// Validate reports whether the options are usable. Call it after
// EnsureDefaults.
func (o *Options) Validate() error {
	var errs []error
	if !(o.Threshold > 0) || math.IsInf(o.Threshold, 0) {
		errs = append(errs, fmt.Errorf("phi: Threshold %v must be positive and finite", o.Threshold))
	}
	if o.WindowSize < 2 || o.WindowSize > 1<<20 {
		errs = append(errs, fmt.Errorf("phi: WindowSize %d out of range [2, 2^20]", o.WindowSize))
	}
	if o.MinStdDev <= 0 || o.FirstHeartbeatEstimate <= 0 || o.AcceptableHeartbeatPause < 0 {
		errs = append(errs, errors.New("phi: MinStdDev and FirstHeartbeatEstimate must be positive, AcceptableHeartbeatPause not negative"))
	}
	if o.MaxSampleInterval < o.FirstHeartbeatEstimate {
		errs = append(errs, fmt.Errorf("phi: MaxSampleInterval %v < FirstHeartbeatEstimate %v", o.MaxSampleInterval, o.FirstHeartbeatEstimate))
	}
	return errors.Join(errs...)
}

// Transition reports that a peer changed between Up and Down.
type Transition struct {
	// Peer is the peer's name as given to Heartbeat.
	Peer string
	// Up is the new status.
	Up bool
	// Phi is the peer's phi when the change was seen.
	Phi float64
}

// Status is a peer's current phi and status.
type Status struct {
	// Peer is the peer's name.
	Peer string
	// Phi is the current phi.
	Phi float64
	// Up is Phi < Threshold.
	Up bool
	// LastHeartbeat is the arrival time of the last heartbeat.
	LastHeartbeat time.Time
}

// Detector is a phi accrual failure detector for a set of peers. It is safe
// for concurrent use.
type Detector struct {
	opts Options
	mu   struct {
		sync.Mutex
		// peers is guarded by mu.
		peers map[string]*window
	}
}

// window is one peer's history: inter-arrival times in seconds.
type window struct {
	last       time.Time
	samples    []float64 // ring buffer
	head, n    int
	sum, sumSq float64
	// adds counts additions since the sums were last recomputed from the
	// samples, to bound floating-point drift.
	adds int
	// reported is the status last returned by Update.
	reported bool
}

// New returns a detector. opts may be nil; it is copied.
func New(opts *Options) (*Detector, error) {
	o := *opts.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	d := &Detector{opts: o}
	d.mu.peers = make(map[string]*window)
	return d, nil
}

// Options returns the detector's options.
func (d *Detector) Options() Options { return d.opts }

func (w *window) add(sec float64) {
	if w.n == len(w.samples) {
		old := w.samples[w.head]
		w.sum -= old
		w.sumSq -= old * old
	} else {
		w.n++
	}
	w.samples[w.head] = sec
	w.sum += sec
	w.sumSq += sec * sec
	if w.head++; w.head == len(w.samples) {
		w.head = 0
	}
	if w.adds++; w.adds >= len(w.samples) {
		w.adds, w.sum, w.sumSq = 0, 0, 0
		for _, v := range w.samples[:w.n] {
			w.sum += v
			w.sumSq += v * v
		}
	}
}

// Heartbeat records a heartbeat from peer arriving now. The first heartbeat
// of an unknown peer starts tracking it.
func (d *Detector) Heartbeat(peer string) {
	now := d.opts.Clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	w, ok := d.mu.peers[peer]
	if !ok {
		w = &window{samples: make([]float64, d.opts.WindowSize), last: now}
		mean := d.opts.FirstHeartbeatEstimate.Seconds()
		w.add(mean - mean/4)
		w.add(mean + mean/4)
		d.mu.peers[peer] = w
		return
	}
	iv := now.Sub(w.last)
	if iv < 0 {
		return // clock went backwards; keep the later arrival
	}
	w.last = now
	if iv <= d.opts.MaxSampleInterval {
		w.add(iv.Seconds())
	}
}

// phiLocked returns w's phi at now.
func (d *Detector) phiLocked(w *window, now time.Time) float64 {
	n := float64(w.n)
	m := w.sum / n
	std := math.Sqrt(max(w.sumSq/n-m*m, 0))
	std = max(std, d.opts.MinStdDev.Seconds())
	mean := m + d.opts.AcceptableHeartbeatPause.Seconds()
	return Phi(now.Sub(w.last).Seconds(), mean, std)
}

// Phi returns -log10 of the probability that a heartbeat arrives more than
// elapsed seconds after the previous one, when inter-arrival times are
// normal with the given mean and standard deviation (seconds). It uses the
// logistic approximation of the normal CDF from Akka's detector, which stays
// finite and monotonic far into the tail.
func Phi(elapsed, mean, stdDev float64) float64 {
	y := (elapsed - mean) / stdDev
	e := math.Exp(-y * (1.5976 + 0.070566*y*y))
	if elapsed > mean {
		if math.IsInf(e, 0) || e == 0 {
			// Far tail: -log10(e/(1+e)) ~ -log10(e).
			return y * (1.5976 + 0.070566*y*y) / math.Ln10
		}
		return -math.Log10(e / (1 + e))
	}
	return math.Max(0, -math.Log10(1-1/(1+e)))
}

// Phi returns peer's current phi, or 0 for a peer with no heartbeat yet.
func (d *Detector) Phi(peer string) float64 {
	now := d.opts.Clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	w, ok := d.mu.peers[peer]
	if !ok {
		return 0
	}
	return d.phiLocked(w, now)
}

// Up reports whether peer is up: it has sent a heartbeat and its phi is
// below the threshold.
func (d *Detector) Up(peer string) bool {
	now := d.opts.Clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	w, ok := d.mu.peers[peer]
	return ok && d.phiLocked(w, now) < d.opts.Threshold
}

// Remove forgets peer, for example after it left the cluster.
func (d *Detector) Remove(peer string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.mu.peers, peer)
}

// Update evaluates every peer now and returns the peers whose status
// changed since the previous Update, sorted by name. A newly tracked peer is
// reported as it first comes Up.
func (d *Detector) Update() []Transition {
	now := d.opts.Clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Transition
	for name, w := range d.mu.peers {
		p := d.phiLocked(w, now)
		up := p < d.opts.Threshold
		if up != w.reported {
			w.reported = up
			out = append(out, Transition{Peer: name, Up: up, Phi: p})
		}
	}
	slices.SortFunc(out, func(a, b Transition) int {
		switch {
		case a.Peer < b.Peer:
			return -1
		case a.Peer > b.Peer:
			return 1
		}
		return 0
	})
	return out
}

// Snapshot returns every tracked peer's status, sorted by name.
func (d *Detector) Snapshot() []Status {
	now := d.opts.Clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Status, 0, len(d.mu.peers))
	for name, w := range d.mu.peers {
		p := d.phiLocked(w, now)
		out = append(out, Status{Peer: name, Phi: p, Up: p < d.opts.Threshold, LastHeartbeat: w.last})
	}
	slices.SortFunc(out, func(a, b Status) int {
		switch {
		case a.Peer < b.Peer:
			return -1
		case a.Peer > b.Peer:
			return 1
		}
		return 0
	})
	return out
}
