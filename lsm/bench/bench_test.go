package bench

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRatioFormat checks the exact ratio line format without running any
// engine.
func TestRatioFormat(t *testing.T) {
	mk := func(eng, w string, ops int64) *Result {
		return &Result{Engine: eng, Workload: w, Ops: ops, Elapsed: time.Second}
	}
	results := []*Result{
		mk("tierkv", FillSync1, 300), mk("pebble", FillSync1, 200), mk("badger", FillSync1, 400), mk("goleveldb", FillSync1, 100),
		{Engine: "tierkv", Workload: ReadRandom, Err: fmt.Errorf("boom")}, mk("pebble", ReadRandom, 50),
	}
	var out, errw bytes.Buffer
	cfg := Config{Engines: []string{"tierkv", "pebble", "badger", "goleveldb"}, Workloads: []string{FillSync1, ReadRandom}}
	printRatios(&out, &errw, cfg, results)
	want := []string{
		"ratio fillrandom-sync-1 tierkv/pebble = 1.50",
		"ratio fillrandom-sync-1 tierkv/best = 0.75",
		"ratio readrandom tierkv/pebble = 0.00",
		"ratio readrandom tierkv/best = 0.00",
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	for i, w := range want {
		if i >= len(got) || got[i] != w {
			t.Fatalf("ratio lines:\n%s\nwant:\n%s", out.String(), strings.Join(want, "\n"))
		}
	}
}

func TestKeysDistinct(t *testing.T) {
	a, b := make([]byte, 100), make([]byte, 100)
	seen := map[string]bool{}
	for i := uint64(0); i < 1000; i++ {
		makeKey(a, i, false)
		makeKey(b, i, true)
		if bytes.Equal(a, b) || seen[string(a)] || seen[string(b)] {
			t.Fatalf("key collision at %d", i)
		}
		seen[string(a)], seen[string(b)] = true, true
	}
}

// TestEndToEnd runs every compiled-in engine through every workload with
// tiny sizes and checks the output, in particular the exact ratio lines.
// It lives in the nested lsm/bench module, so the main module's
// `go test ./...` never runs it; run it with `cd lsm/bench && go test`.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end engine benchmark skipped in -short mode")
	}
	var out, errw bytes.Buffer
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.FillDuration = 0
	cfg.FillKeys = 200
	cfg.ReadDuration = 0
	cfg.ReadOps = 200
	cfg.Readers = 2
	cfg.MemTableSize = 1 << 20 // small memtables so the fills flush
	cfg.BlockCacheSize = 8 << 20
	cfg.SettleQuiet = 200 * time.Millisecond
	cfg.SettleMax = 30 * time.Second
	cfg.Progress = 0
	cfg.Stdout, cfg.Stderr = &out, &errw
	results, err := Run(cfg)
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errw.String())
	if err != nil {
		t.Fatal(err)
	}
	engines := Engines()
	if len(results) != len(engines)*len(AllWorkloads) {
		t.Fatalf("got %d results, want %d", len(results), len(engines)*len(AllWorkloads))
	}
	for _, r := range results {
		if r.Err != nil || r.Failures > 0 {
			t.Errorf("%s/%s: err=%v failures=%d", r.Engine, r.Workload, r.Err, r.Failures)
		}
		if r.Ops != 200 {
			t.Errorf("%s/%s: %d ops, want 200", r.Engine, r.Workload, r.Ops)
		}
		if isFill(r.Workload) {
			if _, wt := r.WriteAmp(); !(wt > 0) || math.IsInf(wt, 0) {
				t.Errorf("%s/%s: write amp %v", r.Engine, r.Workload, wt)
			}
		}
		if r.DiskBytes <= 0 {
			t.Errorf("%s/%s: disk bytes %d", r.Engine, r.Workload, r.DiskBytes)
		}
	}
	if !strings.Contains(out.String(), "| engine | workload |") {
		t.Error("no summary table")
	}
	hasTierkv := false
	for _, e := range engines {
		hasTierkv = hasTierkv || e == "tierkv"
	}
	if !hasTierkv {
		t.Skip("tierkv not compiled in (-tags notierkv); ratio lines not checked")
	}
	for _, w := range AllWorkloads {
		for _, against := range []string{"pebble", "best"} {
			re := regexp.MustCompile(`(?m)^ratio ` + regexp.QuoteMeta(w) + ` tierkv/` + against + ` = [0-9]+\.[0-9]{2}$`)
			if n := len(re.FindAllString(out.String(), -1)); n != 1 {
				t.Errorf("want exactly one line %q, found %d", re, n)
			}
		}
	}
}
