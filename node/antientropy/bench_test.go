package antientropy

import (
	"context"
	"fmt"
	"testing"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// BenchmarkRepair: two replicas of 100,000 keys (16-byte keys, 100-byte
// values) of which 1% differ, one session over four ranges.
//
//	go test -run XXX -bench Repair -benchtime 3x ./node/antientropy
func BenchmarkRepair(b *testing.B) {
	b.ReportAllocs()
	clock := newManualClock()
	open := func() *Local {
		db, err := lsm.Open("/db", &lsm.Options{FS: vfs.NewMemFS(), Clock: clock, Logger: discard, MemTableSize: 8 << 20})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		l, err := NewLocal(db, &Options{Clock: clock})
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	a, p := open(), open()
	val := make([]byte, 100)
	const n = 100_000
	v := versionAt(clock.Now(), 1)
	for _, l := range []*Local{a, p} {
		var bt lsm.Batch
		for i := range n {
			bt.Set([]byte(fmt.Sprintf("key-%012d", i)), val, v)
			if bt.Len() == 1000 {
				if err := l.db.Apply(&bt, lsm.NoSync); err != nil {
					b.Fatal(err)
				}
				bt.Reset()
			}
		}
		if err := l.db.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	ranges := quarters()
	b.ResetTimer()
	for it := range b.N {
		b.StopTimer()
		var bt lsm.Batch
		for i := 0; i < n; i += 100 {
			bt.Set([]byte(fmt.Sprintf("key-%012d", i)), val, v+uint64(it+1))
		}
		if err := p.db.Apply(&bt, lsm.NoSync); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		st, err := a.Repair(context.Background(), NewMemPeer(p), ranges)
		if err != nil {
			b.Fatal(err)
		}
		if st.KeysFetched != n/100 {
			b.Fatalf("%+v", st)
		}
		b.ReportMetric(float64(st.HashesReceived), "hashes/op")
		b.ReportMetric(float64(st.DigestsReceived), "digests/op")
	}
}
