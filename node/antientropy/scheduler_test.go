package antientropy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tierkv/tierkv/ring"
)

func testRing(t *testing.T, ids ...ring.NodeID) *ring.Ring {
	t.Helper()
	r, err := ring.New(&ring.Options{VNodes: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		toks, err := r.AllocateTokens(id)
		if err != nil {
			t.Fatal(err)
		}
		if r, err = r.Add(ring.Member{ID: id, State: ring.StateNormal, Tokens: toks}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// TestPlan: every token's work matches the ring's preference list (an
// oracle: OwnersOfTokenInto), and ranges are disjoint.
func TestPlan(t *testing.T) {
	r := testRing(t, "a", "b", "c", "d", "e")
	rng := rand.New(rand.NewPCG(3, 3))
	for _, self := range []ring.NodeID{"a", "c", "e"} {
		for _, n := range []int{1, 2, 3, 5} {
			work := Plan(r, self, n)
			ranges := make([]ring.Range, len(work))
			for i, w := range work {
				ranges[i] = w.Range
			}
			if err := validateRanges(ranges); err != nil {
				t.Fatalf("%s n=%d: %v", self, n, err)
			}
			for range 2000 {
				tok := ring.Token(rng.Uint64())
				owners := r.OwnersOfTokenInto(nil, tok, n)
				var peers []ring.NodeID
				for _, o := range owners {
					if o != self {
						peers = append(peers, o)
					}
				}
				slices.Sort(peers)
				var got []ring.NodeID
				found := false
				for _, w := range work {
					if w.Range.Contains(tok) {
						got, found = w.Peers, true
					}
				}
				if found != slices.Contains(owners, self) || (found && !slices.Equal(got, peers)) {
					t.Fatalf("%s n=%d token %d: plan %v (in plan %v), owners %v", self, n, tok, got, found, owners)
				}
			}
		}
	}
}

// TestSchedulerTriggerRepairsAllRanges: a manual trigger repairs every range
// with every one of its replicas; progress and metrics say so. Periodic
// passes repair only with peers of greater id.
func TestSchedulerTriggerRepairsAllRanges(t *testing.T) {
	ids := []ring.NodeID{"a", "b", "c", "d"}
	const rf = 2
	r := testRing(t, ids...)
	clock := newManualClock()
	reps := map[ring.NodeID]*replica{}
	var all []*replica
	for _, id := range ids {
		reps[id] = newReplica(t, clock, nil)
		all = append(all, reps[id])
	}
	// Every replica holds every key (the test ignores placement on writes)
	// and diverges.
	diverge(t, rand.New(rand.NewPCG(5, 5)), clock, 1000, all...)

	const self = "b"
	work := Plan(r, self, rf)
	pairs := 0
	for _, w := range work {
		pairs += len(w.Peers)
	}
	s, err := NewScheduler(SchedulerOptions{
		Self:  self,
		Local: reps[self].local,
		Plan:  func() []Work { return work },
		Peer: func(_ context.Context, id ring.NodeID) (Peer, error) {
			if p, ok := reps[id]; ok {
				return NewMemPeer(p.local), nil
			}
			return nil, fmt.Errorf("unknown %s", id)
		},
		Clock:  clock,
		Logger: discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Trigger(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Ranges != pairs || st.KeysFetched+st.KeysPushed == 0 {
		t.Errorf("stats %+v, want %d ranges", st, pairs)
	}
	m := s.Metrics()
	if m.PairsDone != pairs || m.PairsTotal != pairs || m.Running || m.Passes != 1 || m.FailedPairs != 0 {
		t.Errorf("metrics %+v, want %d pairs done", m, pairs)
	}
	if m.Totals.KeysFetched != st.KeysFetched {
		t.Errorf("totals %+v", m.Totals)
	}
	for _, w := range work {
		for _, p := range w.Peers {
			rs := []ring.Range{w.Range}
			requireSame(t, fmt.Sprintf("%s vs %s on %v", self, p, w.Range), dump(t, reps[self].db, rs), dump(t, reps[p].db, rs))
		}
	}

	// A periodic pass skips peers with smaller ids ("a").
	greater := 0
	for _, w := range work {
		for _, p := range w.Peers {
			if p > self {
				greater++
			}
		}
	}
	if _, err := s.run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if m := s.Metrics(); m.PairsTotal != greater || greater == pairs {
		t.Errorf("periodic pass: %d pairs, want %d of %d", m.PairsTotal, greater, pairs)
	}
}

// TestSchedulerFailedPeer: an unreachable peer fails its pairs; the pass
// goes on and reports the error.
func TestSchedulerFailedPeer(t *testing.T) {
	clock := newManualClock()
	a, b := newReplica(t, clock, nil), newReplica(t, clock, nil)
	b.set(t, "k", "v", versionAt(clock.Now(), 1))
	work := []Work{{Range: ring.Range{Start: 1, End: 1}, Peers: []ring.NodeID{"b", "down"}}}
	s, err := NewScheduler(SchedulerOptions{
		Self: "a", Local: a.local, Plan: func() []Work { return work }, Logger: discard,
		Peer: func(_ context.Context, id ring.NodeID) (Peer, error) {
			if id == "b" {
				return NewMemPeer(b.local), nil
			}
			return nil, fmt.Errorf("%s is down", id)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Trigger(context.Background()); err == nil {
		t.Error("no error for a down peer")
	}
	if m := s.Metrics(); m.FailedPairs != 1 || m.PairsDone != 2 || m.LastPassErr == nil {
		t.Errorf("metrics %+v", m)
	}
	if _, _, err := a.db.Get([]byte("k")); err != nil {
		t.Errorf("not repaired from the live peer: %v", err)
	}
}

// blockingClock's Sleep waits for a tick (or ctx).
type blockingClock struct {
	*manualClock
	tick chan struct{}
}

func (c blockingClock) Sleep(ctx context.Context, _ time.Duration) error {
	select {
	case <-c.tick:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestSchedulerPeriodicAndClose: Start runs a pass per interval (ticks of an
// injected clock), and Close stops the loop without leaking it (goleak in
// TestMain).
func TestSchedulerPeriodicAndClose(t *testing.T) {
	clock := newManualClock()
	a, b := newReplica(t, clock, nil), newReplica(t, clock, nil)
	bc := blockingClock{manualClock: clock, tick: make(chan struct{})}
	passes := make(chan struct{}, 10)
	s, err := NewScheduler(SchedulerOptions{
		Self: "a", Local: a.local, Clock: bc, Logger: discard,
		Plan: func() []Work { return []Work{{Range: ring.Range{Start: 1, End: 1}, Peers: []ring.NodeID{"b"}}} },
		Peer: func(context.Context, ring.NodeID) (Peer, error) { return NewMemPeer(b.local), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	s.passDoneForTesting = func() { passes <- struct{}{} }
	s.Start()
	for i := range 3 {
		b.set(t, fmt.Sprintf("k%d", i), "v", versionAt(clock.Now(), uint16(i+1)))
		bc.tick <- struct{}{}
		<-passes
		if _, _, err := a.db.Get([]byte(fmt.Sprintf("k%d", i))); err != nil {
			t.Fatalf("pass %d did not repair: %v", i, err)
		}
	}
	if m := s.Metrics(); m.Passes != 3 {
		t.Errorf("passes %d", m.Passes)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Trigger(context.Background()); err != ErrClosed {
		t.Errorf("Trigger after Close: %v", err)
	}
}
