package lsm

import (
	"fmt"
	"testing"

	"github.com/tierkv/tierkv/lsm/vfs"
)

// TestPointReadStopsEarly checks that a point read skips tables whose max
// version is not above the version already found: once the newest L0 table
// answers, the older L6 table is not even probed.
func TestPointReadStopsEarly(t *testing.T) {
	opts := smallOptions(vfs.NewMemFS(), Leveled, newManualClock())
	opts.DisableAutomaticCompactions = true
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 100; i++ {
		if err := db.Set([]byte(fmt.Sprintf("k%03d", i)), []byte("old"), 10, NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Compact(); err != nil { // one table in L6, versions [10, 10]
		t.Fatal(err)
	}
	if err := db.Set([]byte("k050"), []byte("new"), 20, NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil { // one table in L0, versions [20, 20]
		t.Fatal(err)
	}
	before := db.Metrics().BloomChecks
	v, ver, err := db.Get([]byte("k050"))
	if err != nil || string(v) != "new" || ver != 20 {
		t.Fatalf("Get = %q v%d %v", v, ver, err)
	}
	if probes := db.Metrics().BloomChecks - before; probes != 1 {
		t.Fatalf("point read probed %d tables, want 1 (the L6 table cannot hold a newer version)", probes)
	}
	// A late write with an older version lands in a newer table but must
	// not win, and the read must still look at both tables.
	if err := db.Set([]byte("k051"), []byte("late"), 5, NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if v, ver, err := db.Get([]byte("k051")); err != nil || string(v) != "old" || ver != 10 {
		t.Fatalf("late older write won: %q v%d %v", v, ver, err)
	}
}

// TestIterMinVersion checks IterOptions.MinVersion against a filter of the
// full iteration: the keys whose newest version is at least MinVersion,
// with tables of older versions only, late older writes, tombstones and
// the memtable in play.
func TestIterMinVersion(t *testing.T) {
	opts := smallOptions(vfs.NewMemFS(), Leveled, newManualClock())
	opts.DisableAutomaticCompactions = true
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	write := func(from, to int, version uint64, del bool) {
		t.Helper()
		for i := from; i < to; i++ {
			k := []byte(fmt.Sprintf("k%03d", i))
			var err error
			if del {
				err = db.Delete(k, version, NoSync)
			} else {
				err = db.Set(k, []byte(fmt.Sprintf("v%d@%d", i, version)), version, NoSync)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0, 200, 10, false)
	if err := db.Compact(); err != nil { // L6: versions [10, 10]
		t.Fatal(err)
	}
	write(50, 100, 20, false)
	write(90, 110, 25, true)
	if err := db.Flush(); err != nil { // L0: versions [20, 25]
		t.Fatal(err)
	}
	write(120, 130, 5, false) // late and older than what L6 holds
	write(130, 140, 40, false)
	if err := db.Flush(); err != nil { // L0: versions [5, 40]
		t.Fatal(err)
	}
	write(140, 150, 50, false) // memtable
	write(145, 146, 3, false)  // memtable: a late write older than k145@50
	all := func(min uint64) []string {
		it, err := db.NewIter(&IterOptions{IncludeTombstones: true, MinVersion: min})
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		var out []string
		for ok := it.First(); ok; ok = it.Next() {
			out = append(out, fmt.Sprintf("%s@%d/%v=%s", it.Key(), it.Version(), it.Deleted(), it.Value()))
		}
		if err := it.Error(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	lookups := func() uint64 { m := db.Metrics(); return m.BlockCacheHits + m.BlockCacheMisses }
	before := lookups()
	full := all(0)
	if len(full) != 200 {
		t.Fatalf("full iteration: %d keys", len(full))
	}
	if lookups() == before {
		t.Fatal("a full iteration read no table block: the check below would prove nothing")
	}
	// Every table's versions are below 41: the tables are not read at all.
	before = lookups()
	if got := all(41); len(got) != 10 {
		t.Fatalf("MinVersion 41: %d keys, want the 10 in the memtable", len(got))
	}
	if d := lookups() - before; d != 0 {
		t.Fatalf("MinVersion 41 read %d table blocks; tables older than MinVersion must be skipped", d)
	}
	for _, min := range []uint64{1, 10, 11, 20, 21, 25, 26, 40, 41, 50, 51} {
		it, _ := db.NewIter(&IterOptions{IncludeTombstones: true})
		var want []string
		for ok := it.First(); ok; ok = it.Next() {
			if it.Version() >= min {
				want = append(want, fmt.Sprintf("%s@%d/%v=%s", it.Key(), it.Version(), it.Deleted(), it.Value()))
			}
		}
		it.Close()
		got := all(min)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("MinVersion %d: got %d keys %v\nwant %d keys %v", min, len(got), got, len(want), want)
		}
	}
}
