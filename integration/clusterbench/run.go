package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// result is one measured workload.
type result struct {
	system, op, consistency string
	clients                 int
	ops, errors             int64
	elapsed                 time.Duration
	hist                    *hdrhistogram.Histogram // microseconds
	cpu                     cpuTimes                // the machine's, while it ran
	fsync                   buckets                 // the system's WAL fsyncs, while it ran (nil: not measured)
	disk                    diskTimes               // the data directory's block device, while it ran
	firstErr                error
}

func (r *result) workload() string { return fmt.Sprintf("%s-c%d", r.op, r.clients) }
func (r *result) opsPerSec() float64 {
	return float64(r.ops) / r.elapsed.Seconds()
}
func (r *result) pct(p float64) time.Duration {
	return time.Duration(r.hist.ValueAtQuantile(p)) * time.Microsecond
}

func key(i int) string { return fmt.Sprintf("clusterbench/%08d", i) }

func run(ctx context.Context, cfg config) error {
	counts, err := cfg.clientCounts()
	if err != nil {
		return err
	}
	if cfg.rounds < 1 {
		return fmt.Errorf("bad -rounds %d: at least 1", cfg.rounds)
	}
	for _, op := range strings.Split(cfg.ops, ",") {
		if op != "put" && op != "get" {
			return fmt.Errorf("bad -ops entry %q: put or get", op)
		}
	}
	maxClients := 0
	for _, n := range counts {
		maxClients = max(maxClients, n)
	}
	value := make([]byte, cfg.valueSize)
	for i := range value {
		value[i] = byte(rand.Uint32())
	}
	fmt.Printf("# clusterbench: %d-byte values, %d keys, clients %v, %v per workload\n", cfg.valueSize, cfg.keys, counts, cfg.duration)
	fmt.Printf("# tierkv is reached through its %s API\n", cfg.tierkvAPI)
	fmt.Printf("# tierkv is compared at QUORUM with etcd's defaults (linearizable reads; writes committed by a raft majority, each fsync'd)\n")
	if cfg.syncProbe > 0 {
		p, err := syncProbe(os.TempDir(), 3, cfg.syncProbe)
		if err != nil {
			return fmt.Errorf("sync probe: %w", err)
		}
		fmt.Printf("# disk alone (%s): 3 writers appending 10 KiB + fdatasync for %v: %d syncs, p50 %v p99 %v p99.9 %v\n",
			os.TempDir(), cfg.syncProbe, p.ops, p.pct(50), p.pct(99), p.pct(99.9))
	}
	cfg.diskStat = diskStatPath(os.TempDir())
	names := strings.Split(cfg.systems, ",")
	var results []*result
	for round := range cfg.rounds {
		// NB: every other round measures the systems in reverse order
		// (A B, B A, ...), so that a machine that speeds up or slows
		// down during the run favours neither.
		order := slices.Clone(names)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		if cfg.rounds > 1 {
			fmt.Fprintf(os.Stderr, "round %d of %d: %s\n", round+1, cfg.rounds, strings.Join(order, ", "))
		}
		for _, name := range order {
			rs, err := measureSystem(ctx, cfg, name, counts, maxClients, value)
			if err != nil {
				return err
			}
			results = mergeResults(results, rs)
		}
	}
	report(results)
	return nil
}

// measureSystem starts (or connects to) one system, measures it and stops
// it.
func measureSystem(ctx context.Context, cfg config, name string, counts []int, maxClients int, value []byte) ([]*result, error) {
	var sys system
	var wm *walMetrics
	var err error
	switch strings.TrimSpace(name) {
	case "etcd":
		fmt.Fprintln(os.Stderr, "starting a three-member etcd cluster")
		var etcd *etcdCluster
		etcd, err = startEtcd(ctx, cfg.etcdBin, maxClients)
		if err == nil {
			sys, wm = etcd, newWALMetrics(etcd.urls, "etcd_disk_wal_fsync_duration_seconds")
		}
	case "tierkv":
		endpoints := cfg.tierkvEndpoints
		if cfg.tierkvBin != "" {
			fmt.Fprintln(os.Stderr, "starting tierkv dev (three nodes)")
			dev, httpEPs, grpcEPs, err := startTierkvDev(ctx, cfg.tierkvBin)
			if err != nil {
				return nil, err
			}
			defer dev.Close()
			endpoints = grpcEPs
			wm = newWALMetrics(splitEndpoints(httpEPs), "tierkv_wal_sync_duration_seconds")
			if cfg.tierkvAPI == "http" {
				endpoints = httpEPs
			}
		}
		if endpoints == "" {
			return nil, fmt.Errorf("tierkv: give -tierkv-bin or -tierkv-endpoints")
		}
		levels := strings.Split(cfg.tierkvLevels, ",")
		switch cfg.tierkvAPI {
		case "grpc":
			sys, err = newTierkvGRPC(endpoints, levels, false)
		case "grpc-unary":
			sys, err = newTierkvGRPC(endpoints, levels, true)
		case "http":
			sys, err = newTierkvHTTP(endpoints, levels)
		default:
			return nil, fmt.Errorf("bad -tierkv-api %q: grpc, grpc-unary or http", cfg.tierkvAPI)
		}
	default:
		return nil, fmt.Errorf("unknown system %q", name)
	}
	if err != nil {
		return nil, err
	}
	defer sys.Close()
	return measure(ctx, cfg, sys, wm, counts, value)
}

// mergeResults adds the results of one round to those of the earlier
// ones: a workload's operations, errors, time and latencies add up.
func mergeResults(into, round []*result) []*result {
	for _, r := range round {
		i := slices.IndexFunc(into, func(o *result) bool {
			return o.system == r.system && o.consistency == r.consistency && o.workload() == r.workload()
		})
		if i < 0 {
			into = append(into, r)
			continue
		}
		o := into[i]
		o.ops += r.ops
		o.errors += r.errors
		o.elapsed += r.elapsed
		o.hist.Merge(r.hist)
		o.fsync = o.fsync.add(r.fsync)
		o.disk = o.disk.add(r.disk)
		o.cpu.busy += r.cpu.busy
		o.cpu.total += r.cpu.total
		if o.firstErr == nil {
			o.firstErr = r.firstErr
		}
	}
	return into
}

// measure preloads the key space, then runs put and get workloads at each
// consistency level and client count.
func measure(ctx context.Context, cfg config, sys system, wm *walMetrics, counts []int, value []byte) ([]*result, error) {
	pre := &result{hist: hdrhistogram.New(1, 60_000_000, 3)}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < 16; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(cfg.keys) || ctx.Err() != nil {
					return
				}
				if err := sys.Put(ctx, c, key(int(i)), value, sys.Consistencies()[len(sys.Consistencies())-1]); err != nil && pre.firstErr == nil {
					pre.firstErr = err
				}
			}
		}(c)
	}
	wg.Wait()
	if pre.firstErr != nil {
		return nil, fmt.Errorf("%s: preload: %w", sys.Name(), pre.firstErr)
	}
	fmt.Fprintf(os.Stderr, "%s: preloaded %d keys in %v\n", sys.Name(), cfg.keys, time.Since(start).Round(time.Millisecond))
	var out []*result
	for _, cons := range sys.Consistencies() {
		for _, op := range strings.Split(cfg.ops, ",") {
			for _, n := range counts {
				r := workload(ctx, cfg, sys, wm, op, cons, n, value)
				out = append(out, r)
				fmt.Printf("result system=%s op=%s consistency=%s clients=%d ops=%d ops/s=%.1f p50=%v p99=%v p99.9=%v errors=%d cpu=%s wal_fsync_p99=%s disk_mean=%s\n",
					r.system, op, orDefault(cons), n, r.ops, r.opsPerSec(), r.pct(50), r.pct(99), r.pct(99.9), r.errors, r.cpu, r.fsync.p99String(), r.disk)
				if r.firstErr != nil {
					fmt.Printf("# %s %s: first error: %v\n", r.system, r.workload(), r.firstErr)
				}
				if ctx.Err() != nil {
					return out, ctx.Err()
				}
			}
		}
	}
	return out, nil
}

func orDefault(c string) string {
	if c == "" {
		return "default"
	}
	return c
}

func workload(ctx context.Context, cfg config, sys system, wm *walMetrics, op, cons string, clients int, value []byte) *result {
	r := &result{system: sys.Name(), op: op, consistency: cons, clients: clients}
	hists := make([]*hdrhistogram.Histogram, clients)
	traces := make([][]opTrace, clients)
	var ops, errs atomic.Int64
	var errOnce sync.Once
	wctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	deadline, _ := wctx.Deadline()
	stopProgress := progress(cfg, sys.Name(), fmt.Sprintf("%s %s c=%d", op, orDefault(cons), clients), &ops)
	fsync0 := wm.scrape(ctx)
	disk0, diskOK := readDisk(cfg.diskStat)
	start := time.Now()
	cpu0, cpuOK := readCPU()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		hists[c] = hdrhistogram.New(1, 60_000_000, 3)
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for wctx.Err() == nil {
				k := key(rng.IntN(cfg.keys))
				t0 := time.Now()
				var err error
				if op == "put" {
					err = sys.Put(wctx, c, k, value, cons)
				} else {
					_, err = sys.Get(wctx, c, k, cons)
				}
				// NB: a call's own deadline timer can fire before wctx's:
				// anything that ends at the deadline is cut off, not an
				// error.
				if wctx.Err() != nil || !time.Now().Before(deadline) {
					return // cut off by the end of the workload: not counted
				}
				if err != nil {
					errs.Add(1)
					errOnce.Do(func() { r.firstErr = err })
					continue
				}
				lat := time.Since(t0)
				_ = hists[c].RecordValue(lat.Microseconds())
				if cfg.latencyLog != "" {
					traces[c] = append(traces[c], opTrace{start: t0.Sub(start), latency: lat})
				}
				ops.Add(1)
			}
		}(c)
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	if cpu1, ok := readCPU(); ok && cpuOK {
		r.cpu = cpu1.sub(cpu0)
	}
	if disk1, ok := readDisk(cfg.diskStat); ok && diskOK {
		r.disk = disk1.sub(disk0)
	}
	r.fsync = wm.scrape(ctx).sub(fsync0)
	stopProgress()
	r.hist = hdrhistogram.New(1, 60_000_000, 3)
	for _, h := range hists {
		r.hist.Merge(h)
	}
	r.ops, r.errors = ops.Load(), errs.Load()
	if cfg.latencyLog != "" {
		if err := writeTraces(cfg.latencyLog, r, traces); err != nil {
			fmt.Fprintln(os.Stderr, "clusterbench: latency log:", err)
		}
	}
	return r
}

// opTrace is one operation of a workload, for -latency-log.
type opTrace struct{ start, latency time.Duration }

// writeTraces appends a workload's operations to the -latency-log file, in
// the order they started.
func writeTraces(path string, r *result, traces [][]opTrace) error {
	var all []opTrace
	for _, t := range traces {
		all = append(all, t...)
	}
	slices.SortFunc(all, func(a, b opTrace) int { return cmp.Compare(a.start, b.start) })
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, t := range all {
		fmt.Fprintf(w, "%s %s %s %d %d\n", r.system, orDefault(r.consistency), r.workload(), t.start.Microseconds(), t.latency.Microseconds())
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func progress(cfg config, name, what string, ops *atomic.Int64) func() {
	if cfg.progress <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(cfg.progress)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "[progress] %s %s: %d ops in %v\n", name, what, ops.Load(), time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done) }
}

// report prints the table and, for every workload measured on both
// systems, tierkv at QUORUM against etcd.
func report(results []*result) {
	fmt.Println()
	fmt.Println("| system | consistency | workload | ops/s | p50 | p99 | p99.9 | errors | machine CPU busy | WAL fsync p99 | disk mean write / flush |")
	fmt.Println("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range results {
		fmt.Printf("| %s | %s | %s | %.0f | %v | %v | %v | %d | %s | %s | %s |\n", r.system, orDefault(r.consistency), r.workload(),
			r.opsPerSec(), r.pct(50), r.pct(99), r.pct(99.9), r.errors, r.cpu, r.fsync.p99String(), r.disk)
	}
	find := func(system, cons, w string) *result {
		for _, r := range results {
			if r.system == system && r.consistency == cons && r.workload() == w {
				return r
			}
		}
		return nil
	}
	for _, r := range results {
		if r.system != "etcd" {
			continue
		}
		t := find("tierkv", "QUORUM", r.workload())
		if t == nil {
			continue
		}
		ratio := 0.0
		if t.errors == 0 {
			ratio = t.opsPerSec() / r.opsPerSec()
		}
		fmt.Printf("ratio %s tierkv/etcd = %.2f\n", r.workload(), ratio)
		fmt.Printf("p99 %s tierkv=%.2f etcd=%.2f\n", r.workload(), ms(t.pct(99)), ms(r.pct(99)))
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
