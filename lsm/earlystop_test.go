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
