// Command enginebench runs tierkv's engine benchmark: the same large-value
// workloads against tierkv's lsm, Pebble v2, Badger v4 and goleveldb.
//
//	cd lsm/bench && go run ./cmd/enginebench [flags]
//
// See lsm/bench/README.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/tierkv/tierkv/lsm/bench"
)

func main() {
	cfg := bench.DefaultConfig()
	engines := flag.String("engines", strings.Join(bench.Engines(), ","), "comma-separated engines to run, in order (compiled in: "+strings.Join(bench.Engines(), ",")+")")
	workloads := flag.String("workloads", strings.Join(bench.AllWorkloads, ","), "comma-separated workloads to run")
	flag.StringVar(&cfg.Dir, "dir", "", "base directory for the engines' data (default $TMPDIR/os.TempDir, or ./.enginebench-tmp if that is tmpfs); must be a real disk")
	flag.DurationVar(&cfg.FillDuration, "fill-duration", cfg.FillDuration, "run each fill workload this long (0 = only -fill-keys)")
	flag.Int64Var(&cfg.FillKeys, "fill-keys", cfg.FillKeys, "stop each fill after this many keys (0 = only -fill-duration)")
	flag.DurationVar(&cfg.ReadDuration, "read-duration", cfg.ReadDuration, "run each read workload this long (0 = only -read-ops)")
	flag.Int64Var(&cfg.ReadOps, "read-ops", cfg.ReadOps, "stop each read workload after this many reads (0 = only -read-duration)")
	flag.IntVar(&cfg.Readers, "readers", cfg.Readers, "concurrent readers in readrandom/readmissing")
	flag.IntVar(&cfg.KeySize, "key-size", cfg.KeySize, "key size in bytes")
	flag.IntVar(&cfg.ValueSize, "value-size", cfg.ValueSize, "value size in bytes (random, incompressible)")
	flag.Int64Var(&cfg.MemTableSize, "memtable", cfg.MemTableSize, "memtable size in bytes, same for every engine")
	flag.Int64Var(&cfg.BlockCacheSize, "cache", cfg.BlockCacheSize, "block cache size in bytes, same for every engine")
	flag.IntVar(&cfg.BloomBitsPerKey, "bloom-bits", cfg.BloomBitsPerKey, "bloom filter bits per key (Badger: equivalent false-positive rate)")
	flag.DurationVar(&cfg.SettleQuiet, "settle", cfg.SettleQuiet, "an engine has settled when it reports no background work and the process wrote nothing for this long")
	flag.DurationVar(&cfg.SettleMax, "settle-max", cfg.SettleMax, "maximum time to wait for an engine to settle")
	flag.DurationVar(&cfg.Progress, "progress", cfg.Progress, "progress line interval on stderr (0 = off)")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the engines' directories after the run")
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	cfg.Engines = splitList(*engines)
	cfg.Workloads = splitList(*workloads)
	if _, err := bench.Run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "enginebench:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
