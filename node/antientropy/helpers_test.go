package antientropy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/ring"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// manualClock is a Clock whose Sleep advances its time at once and records
// the total slept.
type manualClock struct {
	mu    sync.Mutex
	t     time.Time
	slept time.Duration
}

func newManualClock() *manualClock {
	return &manualClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.t = c.t.Add(d)
		c.slept += d
	}
	return nil
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *manualClock) Slept() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slept
}

const testGrace = 10 * 24 * time.Hour

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// replica is one test replica: an engine and its Local.
type replica struct {
	db    *lsm.DB
	local *Local
}

func newReplica(t *testing.T, clock *manualClock, opts *Options) *replica {
	t.Helper()
	db, err := lsm.Open("/db", &lsm.Options{
		FS:                   vfs.NewMemFS(),
		Clock:                clock,
		Logger:               discard,
		MemTableSize:         1 << 20,
		TombstoneGracePeriod: testGrace,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	var o Options
	if opts != nil {
		o = *opts
	}
	o.Clock = clock
	o.TombstoneGracePeriod = testGrace
	l, err := NewLocal(db, &o)
	if err != nil {
		t.Fatal(err)
	}
	return &replica{db: db, local: l}
}

// versionAt returns an HLC-layout version at time t.
func versionAt(t time.Time, logical uint16) uint64 {
	return uint64(t.UnixMilli())<<16 | uint64(logical)
}

func (r *replica) set(t *testing.T, k string, v string, ver uint64) {
	t.Helper()
	if err := r.db.Set([]byte(k), []byte(v), ver, lsm.NoSync); err != nil {
		t.Fatal(err)
	}
}

func (r *replica) del(t *testing.T, k string, ver uint64) {
	t.Helper()
	if err := r.db.Delete([]byte(k), ver, lsm.NoSync); err != nil {
		t.Fatal(err)
	}
}

// dump returns every entry (tombstones included) whose token is in one of
// ranges (all entries for nil ranges), sorted by key.
func dump(t *testing.T, db *lsm.DB, ranges []ring.Range) []lsm.Entry {
	t.Helper()
	it, err := db.NewIter(&lsm.IterOptions{IncludeTombstones: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []lsm.Entry
	for ok := it.First(); ok; ok = it.Next() {
		if ranges != nil {
			in := false
			for _, r := range ranges {
				in = in || r.Contains(ring.KeyToken(it.Key()))
			}
			if !in {
				continue
			}
		}
		out = append(out, lsm.Entry{Key: append([]byte(nil), it.Key()...), Value: append([]byte(nil), it.Value()...),
			Version: it.Version(), Deleted: it.Deleted()})
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func entryString(e lsm.Entry) string {
	if e.Deleted {
		return fmt.Sprintf("%q@%d DEL", e.Key, e.Version)
	}
	return fmt.Sprintf("%q@%d=%q", e.Key, e.Version, e.Value)
}

// diffCount returns the number of keys whose newest version differs between
// a and b (present on one side only, or another version or content).
func diffCount(a, b []lsm.Entry) int {
	n, i, j := 0, 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i == len(a):
			n++
			j++
		case j == len(b):
			n++
			i++
		default:
			switch c := bytes.Compare(a[i].Key, b[j].Key); {
			case c < 0:
				n++
				i++
			case c > 0:
				n++
				j++
			default:
				if entryString(a[i]) != entryString(b[j]) {
					n++
				}
				i++
				j++
			}
		}
	}
	return n
}

func requireSame(t *testing.T, what string, a, b []lsm.Entry) {
	t.Helper()
	if d := diffCount(a, b); d != 0 {
		for i := 0; i < len(a) || i < len(b); i++ {
			var x, y string
			if i < len(a) {
				x = entryString(a[i])
			}
			if i < len(b) {
				y = entryString(b[i])
			}
			if x != y {
				t.Errorf("%s: first difference at %d: %s vs %s", what, i, x, y)
				break
			}
		}
		t.Fatalf("%s: %d keys differ (%d vs %d entries)", what, d, len(a), len(b))
	}
}

// quarters splits the ring into four ranges, the last one wrapping past 0.
func quarters() []ring.Range {
	q := ring.Token(1) << 62
	return []ring.Range{{Start: 7, End: q}, {Start: q, End: 2 * q}, {Start: 2 * q, End: 3 * q}, {Start: 3 * q, End: 7}}
}

// diverge writes a common history to all replicas and then, on each one,
// independent newer writes, deletes, older versions and keys of its own.
// Keys are fixed size (16 bytes) and values 32 bytes.
func diverge(t *testing.T, rng *rand.Rand, clock *manualClock, nkeys int, rs ...*replica) {
	t.Helper()
	key := func(i int) string { return fmt.Sprintf("key-%012d", i) }
	val := func(tag string, i int) string { return fmt.Sprintf("%-16s%16d", tag, i) }
	base := clock.Now()
	for i := 0; i < nkeys; i++ {
		for _, r := range rs {
			r.set(t, key(i), val("base", i), versionAt(base, 1))
		}
	}
	for _, r := range rs {
		if err := r.db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Minute)
	now := clock.Now()
	for ri, r := range rs {
		for n := 0; n < nkeys/20; n++ {
			i := rng.IntN(nkeys)
			// Distinct logical counters per replica: no equal versions
			// with different contents (those are conflicts).
			ver := versionAt(now, uint16(10+ri*1000+n%900))
			switch rng.IntN(4) {
			case 0:
				r.set(t, key(i), val(fmt.Sprintf("new%d", ri), n), ver)
			case 1:
				r.del(t, key(i), ver)
			case 2: // an older version: ignored by this replica
				r.set(t, key(i), val("old", n), versionAt(base.Add(-time.Hour), uint16(ri)))
			case 3: // a key only this replica has
				r.set(t, key(nkeys+ri*nkeys+n), val("own", n), ver)
			}
		}
		if ri%2 == 0 {
			if err := r.db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
}
