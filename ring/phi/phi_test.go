package phi

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// manualClock is a Clock the test moves by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newDetector(t *testing.T) (*Detector, *manualClock) {
	t.Helper()
	clk := &manualClock{t: time.Unix(1_700_000_000, 0)}
	d, err := New(&Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return d, clk
}

func TestOptions(t *testing.T) {
	o := (*Options)(nil).EnsureDefaults()
	if o.Threshold != 8 || o.WindowSize != 1000 || o.Clock == nil {
		t.Fatalf("defaults %+v", o)
	}
	for _, bad := range []Options{
		{Threshold: -1}, {Threshold: math.Inf(1)}, {WindowSize: 1},
		{MinStdDev: -time.Second}, {FirstHeartbeatEstimate: 2 * time.Second, MaxSampleInterval: time.Second},
	} {
		if _, err := New(&bad); err == nil {
			t.Errorf("New(%+v): expected error", bad)
		}
	}
}

func TestPhiFunction(t *testing.T) {
	// At the mean, P(later) = 1/2: phi = log10(2).
	if p := Phi(1, 1, 0.1); math.Abs(p-math.Log10(2)) > 1e-3 {
		t.Errorf("phi at mean = %v", p)
	}
	prev := -1.0
	for e := 0.0; e < 100; e += 0.01 {
		p := Phi(e, 1, 0.1)
		if p < prev || math.IsNaN(p) || math.IsInf(p, 0) {
			t.Fatalf("phi(%v) = %v after %v: not monotonic and finite", e, p, prev)
		}
		prev = p
	}
	// Close to the exact normal tail: P(Z > 3) = 1.35e-3, phi ~ 2.87.
	if p := Phi(1.3, 1, 0.1); math.Abs(p-2.87) > 0.1 {
		t.Errorf("phi at 3 sigma = %v", p)
	}
}

// jittered returns a heartbeat interval: 1s +- 300ms uniform, and once in
// 500 heartbeats a slow gossip hop adds up to 2s.
func jittered(rng *rand.Rand) time.Duration {
	d := time.Second + time.Duration(rng.Int64N(int64(600*time.Millisecond))) - 300*time.Millisecond
	if rng.IntN(500) == 0 {
		d += time.Duration(rng.Int64N(int64(2 * time.Second)))
	}
	return d
}

// TestNoFalseSuspicion24h feeds 24 hours of virtual time of jittered
// heartbeats and checks the peer is Up just before every heartbeat, where its
// phi peaks.
func TestNoFalseSuspicion24h(t *testing.T) {
	d, clk := newDetector(t)
	rng := rand.New(rand.NewPCG(7, 8))
	d.Heartbeat("p")
	if tr := d.Update(); len(tr) != 1 || !tr[0].Up {
		t.Fatalf("first heartbeat should bring the peer Up: %+v", tr)
	}
	maxPhi := 0.0
	beats := 0
	for elapsed := time.Duration(0); elapsed < 24*time.Hour; {
		iv := jittered(rng)
		clk.Advance(iv - time.Nanosecond)
		p := d.Phi("p")
		maxPhi = max(maxPhi, p)
		if tr := d.Update(); len(tr) != 0 {
			t.Fatalf("false suspicion after %v (interval %v): %+v", elapsed, iv, tr)
		}
		clk.Advance(time.Nanosecond)
		d.Heartbeat("p")
		elapsed += iv
		beats++
	}
	t.Logf("%d heartbeats over 24h virtual time, max phi %.3f (threshold 8)", beats, maxPhi)
}

// heartbeatsFor feeds n jittered heartbeats and returns the mean and
// standard deviation of the intervals the detector's window holds.
func heartbeatsFor(d *Detector, clk *manualClock, rng *rand.Rand, n int) (mean, std float64) {
	var ivs []float64
	for range n {
		iv := jittered(rng)
		clk.Advance(iv)
		d.Heartbeat("p")
		if iv <= d.opts.MaxSampleInterval {
			ivs = append(ivs, iv.Seconds())
		}
	}
	ivs = ivs[len(ivs)-d.opts.WindowSize:]
	for _, v := range ivs {
		mean += v
	}
	mean /= float64(len(ivs))
	for _, v := range ivs {
		std += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(std / float64(len(ivs)))
}

// suspectAfter advances the clock in 10ms steps without heartbeats and
// returns how long it took for Update to report the peer Down.
func suspectAfter(t *testing.T, d *Detector, clk *manualClock) time.Duration {
	t.Helper()
	for waited := time.Duration(0); waited < time.Minute; waited += 10 * time.Millisecond {
		clk.Advance(10 * time.Millisecond)
		for _, tr := range d.Update() {
			if tr.Peer == "p" && !tr.Up {
				return waited + 10*time.Millisecond
			}
		}
	}
	t.Fatal("stopped peer never suspected")
	return 0
}

// expectedWindow is the detection time a normal model predicts: phi = 8 is
// reached between 5.0 and 5.7 standard deviations past mean + pause (the
// exact normal tail puts 1e-8 at 5.61 sigma, Akka's logistic approximation
// at about 5.2).
func expectedWindow(o Options, mean, std float64) (lo, hi time.Duration) {
	std = max(std, o.MinStdDev.Seconds())
	base := mean + o.AcceptableHeartbeatPause.Seconds()
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	return sec(base + 5.0*std), sec(base + 5.7*std)
}

// TestStoppedPeerSuspected stops a peer after a steady stream of jittered
// heartbeats and checks it is suspected within the time the model predicts.
func TestStoppedPeerSuspected(t *testing.T) {
	d, clk := newDetector(t)
	rng := rand.New(rand.NewPCG(9, 10))
	d.Heartbeat("p")
	mean, std := heartbeatsFor(d, clk, rng, 1500)
	got := suspectAfter(t, d, clk)
	lo, hi := expectedWindow(d.opts, mean, std)
	t.Logf("window mean %.3fs std %.3fs: suspected after %v, expected in [%v, %v]", mean, std, got, lo, hi)
	if got < lo || got > hi {
		t.Fatalf("suspected after %v, expected in [%v, %v]", got, lo, hi)
	}
	if d.Up("p") {
		t.Fatal("Up says the stopped peer is up")
	}
}

// TestPausedPeerComesBack pauses a peer for a minute (Down), resumes it (Up
// at the next Update), and checks the pause did not poison its window: a
// later stop is detected as fast as before.
func TestPausedPeerComesBack(t *testing.T) {
	d, clk := newDetector(t)
	rng := rand.New(rand.NewPCG(11, 12))
	d.Heartbeat("p")
	d.Update()
	heartbeatsFor(d, clk, rng, 1200)
	first := suspectAfter(t, d, clk)
	clk.Advance(time.Minute - first)
	if d.Up("p") {
		t.Fatal("paused peer is up")
	}
	d.Heartbeat("p")
	if tr := d.Update(); len(tr) != 1 || !tr[0].Up || tr[0].Peer != "p" {
		t.Fatalf("resumed peer not reported Up: %+v", tr)
	}
	mean, std := heartbeatsFor(d, clk, rng, 1200)
	again := suspectAfter(t, d, clk)
	lo, hi := expectedWindow(d.opts, mean, std)
	t.Logf("first suspicion after %v, after the pause %v (expected [%v, %v])", first, again, lo, hi)
	if again < lo || again > hi {
		t.Fatalf("after the pause: suspected after %v, expected in [%v, %v]", again, lo, hi)
	}
}

func TestSnapshotAndRemove(t *testing.T) {
	d, clk := newDetector(t)
	if d.Phi("x") != 0 || d.Up("x") {
		t.Fatal("unknown peer should have phi 0 and be down")
	}
	d.Heartbeat("b")
	d.Heartbeat("a")
	clk.Advance(500 * time.Millisecond)
	s := d.Snapshot()
	if len(s) != 2 || s[0].Peer != "a" || !s[0].Up || s[0].Phi < 0 || math.Signbit(s[0].Phi) {
		t.Fatalf("snapshot %+v", s)
	}
	tr := d.Update()
	if len(tr) != 2 || tr[0].Peer != "a" || tr[1].Peer != "b" {
		t.Fatalf("transitions %+v", tr)
	}
	d.Remove("a")
	if len(d.Snapshot()) != 1 {
		t.Fatal("Remove did not forget the peer")
	}
	// A clock that steps backwards does not corrupt the window.
	clk.Advance(-time.Second)
	d.Heartbeat("b")
	if p := d.Phi("b"); math.IsNaN(p) {
		t.Fatal("NaN phi")
	}
}
