package lsm

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm/vfs"
)

// TestCompactionThrottled checks that compaction output draws from the
// rate limiter: right after a throttled compaction the limiter's bucket is
// far from full, while flushes (not throttled) leave it full.
func TestCompactionThrottled(t *testing.T) {
	opts := smallOptions(vfs.NewMemFS(), Leveled, newManualClock())
	opts.DisableAutomaticCompactions = true
	opts.ValueSeparationThreshold = -1 // values stay in tables, so compactions write them
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetCompactionRate(4 << 20)
	rng := rand.New(rand.NewPCG(1, 1))
	val := make([]byte, 1000)
	for i := 0; i < 1000; i++ {
		for j := range val {
			val[j] = byte(rng.Uint32())
		}
		if err := db.Set([]byte(fmt.Sprintf("k%04d", i)), val, uint64(i+1), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if tokens := db.limiter.TokensAt(time.Now()); tokens < compactionBurst {
		t.Fatalf("flushes consumed compaction tokens: %.0f left", tokens)
	}
	if err := db.Compact(); err != nil {
		t.Fatal(err)
	}
	if tokens := db.limiter.TokensAt(time.Now()); tokens > compactionBurst/2 {
		t.Fatalf("a ~1 MB compaction left %.0f of %d tokens: its writes were not throttled", tokens, compactionBurst)
	}
}
