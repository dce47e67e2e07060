package antientropy

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/ring"
)

// TestRepairConverges: two replicas with random divergent writes, deletes and
// keys of their own are identical (tombstones included) after one repair, and
// the repair streamed exactly the differing keys, not whole leaves.
func TestRepairConverges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		depth  int
		ranges []ring.Range
	}{
		{"whole-ring-depth12", 12, []ring.Range{{Start: 42, End: 42}}},
		{"quarters-depth4", 4, quarters()}, // ~40 keys per leaf
		{"quarters-depth1", 1, quarters()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 1))
			clock := newManualClock()
			a := newReplica(t, clock, &Options{Depth: tc.depth})
			b := newReplica(t, clock, &Options{Depth: tc.depth})
			diverge(t, rng, clock, 3000, a, b)
			want := diffCount(dump(t, a.db, nil), dump(t, b.db, nil))
			if want == 0 {
				t.Fatal("replicas do not diverge")
			}
			peer := NewMemPeer(b.local)
			st, err := a.local.Repair(context.Background(), peer, tc.ranges)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d differing keys: %+v", want, st)
			requireSame(t, "after repair", dump(t, a.db, nil), dump(t, b.db, nil))
			if got := st.KeysFetched + st.KeysPushed; got != want {
				t.Errorf("streamed %d keys (%d fetched, %d pushed), %d differ", got, st.KeysFetched, st.KeysPushed, want)
			}
			if got := peer.EntriesFetched.Load() + peer.EntriesPushed.Load(); got != int64(want) {
				t.Errorf("peer sent and received %d entries, %d keys differ", got, want)
			}
			if tc.depth <= 4 && st.DigestsReceived <= want {
				t.Errorf("test is weak: leaves hold only %d keys for %d differing", st.DigestsReceived, want)
			}
			if st.Conflicts != 0 || st.SkippedPastGrace != 0 {
				t.Errorf("unexpected conflicts or skips: %+v", st)
			}
			// A second repair finds nothing: one root per range.
			st, err = a.local.Repair(context.Background(), peer, tc.ranges)
			if err != nil {
				t.Fatal(err)
			}
			if st.HashesReceived != len(tc.ranges) || st.KeysFetched+st.KeysPushed != 0 {
				t.Errorf("second repair: %+v", st)
			}
		})
	}
}

// TestRepairThreeReplicas: three divergent replicas converge with three
// pairwise repairs (a–b, a–c, b–c).
func TestRepairThreeReplicas(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	clock := newManualClock()
	a, b, c := newReplica(t, clock, nil), newReplica(t, clock, nil), newReplica(t, clock, nil)
	diverge(t, rng, clock, 2000, a, b, c)
	ranges := quarters()
	for _, p := range [][2]*replica{{a, b}, {a, c}, {b, c}} {
		if _, err := p[0].local.Repair(context.Background(), NewMemPeer(p[1].local), ranges); err != nil {
			t.Fatal(err)
		}
	}
	da := dump(t, a.db, nil)
	requireSame(t, "a vs b", da, dump(t, b.db, nil))
	requireSame(t, "a vs c", da, dump(t, c.db, nil))
}

// TestIdenticalReplicasExchangeRootOnly: replicas holding the same data (one
// flushed, the other not) exchange one hash per range and nothing else.
func TestIdenticalReplicasExchangeRootOnly(t *testing.T) {
	clock := newManualClock()
	a, b := newReplica(t, clock, nil), newReplica(t, clock, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	diverge(t, rng, clock, 500, a)
	for _, e := range dump(t, a.db, nil) {
		if e.Deleted {
			b.del(t, string(e.Key), e.Version)
		} else {
			b.set(t, string(e.Key), string(e.Value), e.Version)
		}
	}
	if err := a.db.Compact(); err != nil {
		t.Fatal(err)
	}
	peer := NewMemPeer(b.local)
	ranges := quarters()
	st, err := a.local.Repair(context.Background(), peer, ranges)
	if err != nil {
		t.Fatal(err)
	}
	if st.HashesReceived != len(ranges) || st.RangesInSync != len(ranges) || st.LeavesDiffering != 0 {
		t.Errorf("stats %+v", st)
	}
	if n := peer.HashesCalls.Load() + peer.LeafDigestsCalls.Load() + peer.FetchCalls.Load() + peer.PushCalls.Load(); n != 0 {
		t.Errorf("%d calls beyond Prepare", n)
	}
	if peer.HashesSent.Load() != int64(len(ranges)) {
		t.Errorf("peer sent %d hashes, want %d roots", peer.HashesSent.Load(), len(ranges))
	}
}

// TestOneDifferenceDescendsOnePath: a single differing key costs two hashes
// per level below the root and one leaf of digests.
func TestOneDifferenceDescendsOnePath(t *testing.T) {
	clock := newManualClock()
	a, b := newReplica(t, clock, nil), newReplica(t, clock, nil)
	v := versionAt(clock.Now(), 1)
	for i := range 1000 {
		k := string(rune('a'+i%26)) + string(rune('a'+i/26))
		a.set(t, k, "v", v)
		b.set(t, k, "v", v)
	}
	b.set(t, "only-b", "x", v)
	peer := NewMemPeer(b.local)
	r := []ring.Range{{Start: 0, End: 0}}
	st, err := a.local.Repair(context.Background(), peer, r)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + 2*DefaultDepth; st.HashesReceived != want {
		t.Errorf("received %d hashes, want %d", st.HashesReceived, want)
	}
	if st.LeavesDiffering != 1 || st.KeysFetched != 1 || st.KeysPushed != 0 {
		t.Errorf("stats %+v", st)
	}
	if _, _, err := a.db.Get([]byte("only-b")); err != nil {
		t.Errorf("only-b not fetched: %v", err)
	}
}

// TestDeleteWithinGraceStaysDeleted: a replica that missed a delete for less
// than the grace period receives the tombstone, in whichever direction the
// repair runs; the deleted key is never resurrected on the other.
func TestDeleteWithinGraceStaysDeleted(t *testing.T) {
	for _, initiatorStale := range []bool{false, true} {
		clock := newManualClock()
		fresh, stale := newReplica(t, clock, nil), newReplica(t, clock, nil)
		v1 := versionAt(clock.Now(), 1)
		fresh.set(t, "k", "v", v1)
		stale.set(t, "k", "v", v1)
		clock.Advance(time.Hour)
		v2 := versionAt(clock.Now(), 1)
		fresh.del(t, "k", v2) // stale was away
		clock.Advance(testGrace - 2*time.Hour)
		// Compaction cannot purge the tombstone within grace.
		if err := fresh.db.Compact(); err != nil {
			t.Fatal(err)
		}
		var err error
		if initiatorStale {
			_, err = stale.local.Repair(context.Background(), NewMemPeer(fresh.local), quarters())
		} else {
			_, err = fresh.local.Repair(context.Background(), NewMemPeer(stale.local), quarters())
		}
		if err != nil {
			t.Fatal(err)
		}
		for name, r := range map[string]*replica{"fresh": fresh, "stale": stale} {
			if _, _, err := r.db.Get([]byte("k")); !errors.Is(err, lsm.ErrNotFound) {
				t.Errorf("initiator stale=%v: %s: deleted key readable (err %v)", initiatorStale, name, err)
			}
			e, err := r.db.GetEntry([]byte("k"))
			if err != nil || !e.Deleted || e.Version != v2 {
				t.Errorf("initiator stale=%v: %s: entry %+v, %v; want tombstone @%d", initiatorStale, name, e, err, v2)
			}
		}
	}
}

// TestPastGraceNoResurrection: once a tombstone is past grace and purged, a
// replica that still holds the older value (it was away longer than the
// grace period) does not resurrect it through repair, in either direction;
// the key is counted as skipped. A key within grace that one side lacks is
// still copied.
func TestPastGraceNoResurrection(t *testing.T) {
	for _, initiatorStale := range []bool{false, true} {
		clock := newManualClock()
		fresh, stale := newReplica(t, clock, nil), newReplica(t, clock, nil)
		v1 := versionAt(clock.Now(), 1)
		fresh.set(t, "k", "v", v1)
		stale.set(t, "k", "v", v1)
		clock.Advance(time.Hour)
		fresh.del(t, "k", versionAt(clock.Now(), 1))
		clock.Advance(testGrace + time.Hour)
		if err := fresh.db.Compact(); err != nil {
			t.Fatal(err)
		}
		if _, err := fresh.db.GetEntry([]byte("k")); !errors.Is(err, lsm.ErrNotFound) {
			t.Fatalf("tombstone not purged: %v", err)
		}
		stale.set(t, "recent", "r", versionAt(clock.Now(), 1))
		var st Stats
		var err error
		var peer *MemPeer
		if initiatorStale {
			peer = NewMemPeer(fresh.local)
			st, err = stale.local.Repair(context.Background(), peer, quarters())
		} else {
			peer = NewMemPeer(stale.local)
			st, err = fresh.local.Repair(context.Background(), peer, quarters())
		}
		if err != nil {
			t.Fatal(err)
		}
		// The initiator does not even stream the past-grace entry.
		if n := peer.EntriesFetched.Load() + peer.EntriesPushed.Load(); n != 1 {
			t.Errorf("initiator stale=%v: %d entries streamed, want 1 (recent)", initiatorStale, n)
		}
		if _, err := fresh.db.GetEntry([]byte("k")); !errors.Is(err, lsm.ErrNotFound) {
			t.Errorf("initiator stale=%v: purged key resurrected: %v", initiatorStale, err)
		}
		if _, _, err := fresh.db.Get([]byte("recent")); err != nil {
			t.Errorf("initiator stale=%v: recent key not repaired: %v", initiatorStale, err)
		}
		if st.SkippedPastGrace != 1 {
			t.Errorf("initiator stale=%v: stats %+v, want one skip", initiatorStale, st)
		}
	}
}

// TestPushRefusesPastGraceForAbsentKey: the receiving side enforces the grace
// rule too (the initiator may run another version of the code).
func TestPushRefusesPastGraceForAbsentKey(t *testing.T) {
	clock := newManualClock()
	r := newReplica(t, clock, nil)
	old := versionAt(clock.Now(), 1)
	r.set(t, "held", "v0", old)
	clock.Advance(testGrace)
	err := r.local.Push(context.Background(), []lsm.Entry{
		{Key: []byte("absent"), Value: []byte("x"), Version: old + 1},
		{Key: []byte("held"), Value: []byte("v1"), Version: old + 1},
		{Key: []byte("fresh"), Value: []byte("f"), Version: versionAt(clock.Now(), 1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.db.GetEntry([]byte("absent")); !errors.Is(err, lsm.ErrNotFound) {
		t.Errorf("absent key created past grace: %v", err)
	}
	if v, _, err := r.db.Get([]byte("held")); err != nil || string(v) != "v1" {
		t.Errorf("held key not updated: %q %v", v, err)
	}
	if _, _, err := r.db.Get([]byte("fresh")); err != nil {
		t.Errorf("fresh key not written: %v", err)
	}
}

// TestRateLimitAccounting: every streamed byte (digests received, entries
// fetched and pushed) takes a limiter token, and the repair waits (on the
// injected clock) exactly as long as the limiter asks.
func TestRateLimitAccounting(t *testing.T) {
	clock := newManualClock()
	const bps, burst = 10_000, 1_000
	lim := rate.NewLimiter(bps, burst)
	// The limiter starts full at the clock's time.
	lim.SetBurstAt(clock.Now(), burst)
	a := newReplica(t, clock, &Options{Limiter: lim, MaxBatchKeys: 16})
	b := newReplica(t, clock, nil)
	diverge(t, rand.New(rand.NewPCG(7, 7)), clock, 2000, a, b)
	lim.SetLimitAt(clock.Now(), bps) // refill to full at the current time
	lim.AllowN(clock.Now(), 0)
	before := clock.Slept()
	st, err := a.local.Repair(context.Background(), NewMemPeer(b.local), quarters())
	if err != nil {
		t.Fatal(err)
	}
	tokens := st.BytesFetched + st.BytesPushed + int64(st.DigestsReceived*(16+17))
	slept := clock.Slept() - before
	// Beyond the initial burst, tokens arrive at bps; reservations round
	// to the nanosecond.
	want := time.Duration(float64(tokens-burst) / bps * float64(time.Second))
	if tokens <= 10*burst {
		t.Fatalf("test is weak: only %d tokens", tokens)
	}
	if d := slept - want; d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("slept %v for %d tokens, want %v", slept, tokens, want)
	}
	t.Logf("%d tokens, slept %v (virtual)", tokens, slept)
}

// TestInvalidRequests: out-of-bounds indexes, depths and overlapping ranges
// are errors, not panics.
func TestInvalidRequests(t *testing.T) {
	clock := newManualClock()
	r := newReplica(t, clock, &Options{Depth: 3})
	ctx := context.Background()
	whole := []ring.Range{{Start: 0, End: 0}}
	if _, err := r.local.Prepare(ctx, whole, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := r.local.Hashes(ctx, whole[0], []NodeIndex{15}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("node 15 of depth 3: %v", err)
	}
	if _, err := r.local.Hashes(ctx, ring.Range{Start: 1, End: 2}, []NodeIndex{0}); !errors.Is(err, ErrNoTree) {
		t.Errorf("unprepared range: %v", err)
	}
	if _, err := r.local.Prepare(ctx, whole, MaxDepth+1); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("depth: %v", err)
	}
	if _, err := r.local.LeafDigests(ctx, 3, []LeafSet{{Range: whole[0], Leaves: []int{8}}}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("leaf 8 of depth 3: %v", err)
	}
	overlap := []ring.Range{{Start: 0, End: 10}, {Start: 5, End: 20}}
	if _, err := r.local.Prepare(ctx, overlap, 3); !errors.Is(err, ErrInvalidRanges) {
		t.Errorf("overlap: %v", err)
	}
	wrapOverlap := []ring.Range{{Start: 100, End: 10}, {Start: 5, End: 20}}
	if _, err := r.local.Prepare(ctx, wrapOverlap, 3); !errors.Is(err, ErrInvalidRanges) {
		t.Errorf("wrap overlap: %v", err)
	}
	if err := validateRanges(quarters()); err != nil {
		t.Errorf("quarters: %v", err)
	}
	clock.Advance(time.Hour) // past TreeTTL
	if _, err := r.local.Hashes(ctx, whole[0], []NodeIndex{0}); !errors.Is(err, ErrNoTree) {
		t.Errorf("expired tree: %v", err)
	}
}

// TestRepairSmallMessageBounds: when digests of the differing leaves exceed
// the peer's MaxDigestBytes, the initiator splits its requests; Fetch
// answers stop at MaxBatchBytes and are resumed. The result is the same.
func TestRepairSmallMessageBounds(t *testing.T) {
	clock := newManualClock()
	a := newReplica(t, clock, &Options{Depth: 8, MaxBatchBytes: 300})
	b := newReplica(t, clock, &Options{Depth: 8, MaxBatchBytes: 300, MaxDigestBytes: 4096})
	diverge(t, rand.New(rand.NewPCG(9, 9)), clock, 3000, a, b)
	want := diffCount(dump(t, a.db, nil), dump(t, b.db, nil))
	peer := NewMemPeer(b.local)
	st, err := a.local.Repair(context.Background(), peer, []ring.Range{{Start: 5, End: 5}})
	if err != nil {
		t.Fatal(err)
	}
	requireSame(t, "after repair", dump(t, a.db, nil), dump(t, b.db, nil))
	if got := st.KeysFetched + st.KeysPushed; got != want {
		t.Errorf("streamed %d keys, %d differ", got, want)
	}
	// ~50 bytes an entry: at most 7 a Fetch answer.
	if n := peer.FetchCalls.Load(); n < int64(st.KeysFetched/7) {
		t.Errorf("%d Fetch calls for %d keys: answers not bounded", n, st.KeysFetched)
	}
	if n := peer.LeafDigestsCalls.Load(); n < 2 {
		t.Errorf("%d LeafDigests calls: requests not split", n)
	}
	t.Logf("%+v; %d Fetch, %d LeafDigests calls", st, peer.FetchCalls.Load(), peer.LeafDigestsCalls.Load())
}

// TestFetchAnswerBounded: a Fetch answer stops once it holds MaxBatchBytes
// (at least one key answered) and says how many keys it covered; absent keys
// count as answered.
func TestFetchAnswerBounded(t *testing.T) {
	clock := newManualClock()
	r := newReplica(t, clock, &Options{MaxBatchBytes: 100})
	v := versionAt(clock.Now(), 1)
	var keys [][]byte
	for i := range 10 {
		k := []byte{'k', byte('0' + i)}
		keys = append(keys, k)
		if i != 1 {
			r.set(t, string(k), "0123456789012345678901234567890123456789", v) // 51 bytes an entry
		}
	}
	ctx := context.Background()
	es, done, err := r.local.Fetch(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	// k0 (51 bytes), k1 absent, k2 (102 ≥ 100): stop after three keys.
	if done != 3 || len(es) != 2 || string(es[1].Key) != "k2" {
		t.Fatalf("done %d, %d entries", done, len(es))
	}
	es, done, err = r.local.Fetch(ctx, keys[9:])
	if err != nil || done != 1 || len(es) != 1 {
		t.Fatalf("last key: done %d, %d entries, %v", done, len(es), err)
	}
}
