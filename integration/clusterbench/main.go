// Command clusterbench measures a three-node tierkv cluster against a
// three-member etcd cluster on this machine, in one run: 10 KiB values,
// put and get, 1, 16 and 64 concurrent clients, HDR latency histograms.
// tierkv at QUORUM is compared with etcd's defaults (linearizable reads,
// raft-replicated writes fsync'd by every member).
//
// It prints, per workload,
//
//	ratio <workload> tierkv/etcd = <x.xx>
//	p99 <workload> tierkv=<ms> etcd=<ms>
//
// Run it with `make bench-cluster`, or:
//
//	cd integration/clusterbench && go run . -tierkv-endpoints 127.0.0.1:9081,127.0.0.1:9082,127.0.0.1:9083
//
// The etcd cluster is started by the benchmark (Debian's etcd-server,
// /usr/bin/etcd) on free loopback ports with temporary data directories and
// stopped at the end. It is a separate Go module so that etcd's client never
// becomes a dependency of tierkv.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

func main() {
	cfg := defaultConfig()
	flag.StringVar(&cfg.systems, "systems", "tierkv,etcd", "systems to measure, in order")
	flag.StringVar(&cfg.clients, "clients", "1,16,64", "concurrent clients per workload")
	flag.StringVar(&cfg.ops, "ops", "put,get", "operations to measure, in order")
	flag.StringVar(&cfg.tierkvLevels, "tierkv-levels", "ONE,QUORUM", "tierkv consistency levels to measure (QUORUM is the one compared with etcd)")
	flag.DurationVar(&cfg.duration, "duration", cfg.duration, "how long each workload runs")
	flag.IntVar(&cfg.valueSize, "value-size", cfg.valueSize, "value size in bytes (random, incompressible)")
	flag.IntVar(&cfg.keys, "keys", cfg.keys, "key space: puts overwrite and gets read keys in [0, keys)")
	flag.StringVar(&cfg.etcdBin, "etcd", cfg.etcdBin, "etcd server binary (Debian package etcd-server)")
	flag.StringVar(&cfg.tierkvAPI, "tierkv-api", cfg.tierkvAPI, "how the load reaches tierkv: grpc (the Go client: its calls multiplexed on one KV.Session stream per node), grpc-unary (the Go client with Options.Unary: a unary call per operation, as etcd's client makes) or http")
	flag.StringVar(&cfg.tierkvEndpoints, "tierkv-endpoints", "", "endpoints (host:port) of a running three-node tierkv cluster for -tierkv-api (gRPC or HTTP addresses); requests are spread over them")
	flag.StringVar(&cfg.tierkvBin, "tierkv-bin", "", "a tierkv binary: the benchmark starts `tierkv dev` (three nodes on free loopback ports) and measures it")
	flag.DurationVar(&cfg.progress, "progress", cfg.progress, "progress line interval on stderr (0 = off)")
	flag.IntVar(&cfg.rounds, "rounds", cfg.rounds, "rounds: each measures every system afresh, every other round in reverse order; the report adds the rounds up")
	flag.StringVar(&cfg.latencyLog, "latency-log", "", "append every operation to this file as \"<system> <consistency> <workload> <start µs since the workload began> <latency µs>\" (to see whether slow operations cluster in time)")
	flag.DurationVar(&cfg.syncProbe, "sync-probe", cfg.syncProbe, "before the clusters start, measure the disk alone for this long: three writers appending 10 KiB and fdatasyncing in a loop in the temporary directory the clusters use (the floor under a put's latency; 0 = off)")
	cpuProfile := flag.String("cpuprofile", "", "write the benchmark client's own CPU profile to this file (the load generator shares the machine with the clusters)")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "clusterbench:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		os.Exit(1)
	}
}

type config struct {
	systems, clients  string
	ops, tierkvLevels string
	duration          time.Duration
	valueSize, keys   int
	etcdBin           string
	tierkvAPI         string
	tierkvEndpoints   string
	tierkvBin         string
	progress          time.Duration
	rounds            int
	latencyLog        string
	syncProbe         time.Duration
	// diskStat is the stat file of the block device under the clusters' data
	// (set by run; "" where there is none).
	diskStat string
}

func defaultConfig() config {
	return config{duration: 10 * time.Second, valueSize: 10 << 10, keys: 10000, etcdBin: "/usr/bin/etcd", progress: 5 * time.Second, tierkvAPI: "grpc", rounds: 1, syncProbe: 3 * time.Second}
}

func (c config) clientCounts() ([]int, error) {
	var out []int
	for _, f := range strings.Split(c.clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad -clients entry %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}
