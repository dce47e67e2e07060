package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/tierkv/tierkv/node"
)

// devMemTableSize is the memtable of a `tierkv dev` node. The tests'
// node.LocalConfig keeps 4 MiB so that they flush often; for the dev
// cluster, 16 MiB means a quarter of the flushes, each with its syncs of a
// table, a directory and the manifest on the one disk the nodes share.
// With 10 KiB QUORUM puts at 64 clients on a 2-core VM that gave 25–35%
// more throughput than 4 MiB; 32 MiB and 64 MiB were no better than 16.
const devMemTableSize = 16 << 20

// dev runs three nodes in this process on 127.0.0.1 with one filesystem
// object store (<dir>/bucket) shared by the nodes, so that a replacement
// node could restore from it; it prints the endpoints, the bucket and an
// example curl, and stops the nodes cleanly on Ctrl-C.
func dev(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("tierkv dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "data directory (default: a new temporary directory, removed on exit)")
	basePort := fs.Int("base-port", 8081, "node i (1..3) serves HTTP on base-port+i-1, gRPC on base-port+1000+i-1 and gossip on base-port+2000+i-1; 0 picks free ports")
	nodes := fs.Int("nodes", 3, "number of nodes")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn or error")
	memtable := fs.Int64("memtable-size", devMemTableSize, "each node's engine memtable size in bytes (a node holds at most four: the mutable one and those being flushed)")
	pprof := fs.Bool("enable-pprof", false, "serve Go runtime profiles under /debug/pprof/ on every node's HTTP address (the nodes share one process)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: tierkv dev [flags]\n\nStarts a local cluster on 127.0.0.1 (replication factor 3, filesystem object store).\n"+
			"The nodes share this process; unless GOMAXPROCS is set, the process gets as many\n"+
			"Go processors as the nodes would have as separate processes (nodes x GOMAXPROCS).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "tierkv dev: %v\n", err)
		return 2
	}
	if *memtable < 1<<20 {
		fmt.Fprintln(stderr, "tierkv dev: --memtable-size must be at least 1 MiB (1048576)")
		return 2
	}
	if *nodes < 1 || *nodes > 9 {
		fmt.Fprintln(stderr, "tierkv dev: --nodes must be 1..9")
		return 2
	}
	if procs := devProcs(*nodes, getenv); procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
	keep := *dir != ""
	if !keep {
		d, err := os.MkdirTemp("", "tierkv-dev-")
		if err != nil {
			fmt.Fprintf(stderr, "tierkv dev: %v\n", err)
			return 1
		}
		*dir = d
		defer os.RemoveAll(d)
	}
	addr := func(off, i int) string {
		if *basePort == 0 {
			return "127.0.0.1:0"
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(*basePort+off+i))
	}
	var running []*node.Node
	defer func() {
		for i := len(running) - 1; i >= 0; i-- {
			if err := running[i].Close(); err != nil {
				fmt.Fprintf(stderr, "tierkv dev: stop %s: %v\n", running[i].ID(), err)
			}
		}
	}()
	var seeds []string
	for i := range *nodes {
		cfg := node.LocalConfig()
		cfg.ID = "n" + strconv.Itoa(i+1)
		cfg.DataDir = filepath.Join(*dir, cfg.ID)
		cfg.ObjectStore.Dir = filepath.Join(*dir, "bucket")
		cfg.HTTPAddr, cfg.GRPCAddr, cfg.GossipAddr = addr(0, i), addr(1000, i), addr(2000, i)
		cfg.Seeds = seeds
		cfg.EnablePprof = *pprof
		cfg.MemTableSize = *memtable
		cfg.Logger = log
		if *nodes < 3 {
			cfg.ReplicationFactor = *nodes
		}
		n, err := node.Open(cfg)
		if err != nil {
			fmt.Fprintf(stderr, "tierkv dev: start %s: %v\n", cfg.ID, err)
			return 1
		}
		running = append(running, n)
		seeds = append(seeds, n.GossipAddr())
	}
	// Wait until every node sees every other one up, so that the first
	// QUORUM request succeeds.
	deadline := time.Now().Add(30 * time.Second)
	for !allReady(running) {
		if time.Now().After(deadline) {
			fmt.Fprintln(stderr, "tierkv dev: nodes did not see each other within 30s")
			return 1
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(20 * time.Millisecond):
		}
	}
	fmt.Fprintf(stdout, "tierkv dev: %d nodes on 127.0.0.1, data in %s\n", len(running), *dir)
	fmt.Fprintf(stdout, "  object store (shared by the nodes, objects under <node id>/): %s\n", filepath.Join(*dir, "bucket"))
	for _, n := range running {
		fmt.Fprintf(stdout, "  %s  http://%s  grpc %s  gossip %s\n", n.ID(), n.HTTPAddr(), n.GRPCAddr(), n.GossipAddr())
	}
	h1, h2 := running[0].HTTPAddr(), running[len(running)-1].HTTPAddr()
	fmt.Fprintf(stdout, "Try:\n  curl -X POST -H 'X-Consistency-Level: QUORUM' --data-binary 'hello, tierkv' http://%s/v1/kv/greeting\n", h1)
	fmt.Fprintf(stdout, "  curl -i -H 'X-Consistency-Level: QUORUM' http://%s/v1/kv/greeting\n", h2)
	fmt.Fprintln(stdout, "Ctrl-C stops the cluster.")
	<-ctx.Done()
	fmt.Fprintln(stdout, "tierkv dev: stopping")
	return 0
}

func allReady(ns []*node.Node) bool {
	for _, n := range ns {
		if !n.Ready(len(ns)) {
			return false
		}
	}
	return true
}

// devProcs returns the GOMAXPROCS for a dev cluster of nodes nodes, or 0
// to leave it alone (the user set GOMAXPROCS). As separate processes, as
// in production and as the benchmark's etcd members run, each node would
// have a Go scheduler with GOMAXPROCS processors of its own; in one
// process they would share one scheduler's, and on a busy machine every
// wakeup of one node would queue behind the goroutines of the others
// (make bench-cluster: 20-30% fewer QUORUM operations at 16 clients).
func devProcs(nodes int, getenv func(string) string) int {
	if getenv("GOMAXPROCS") != "" {
		return 0
	}
	return nodes * startProcs
}

// startProcs is the process's GOMAXPROCS at start (the runtime's default
// takes the CPU limit of the process's cgroup into account).
var startProcs = runtime.GOMAXPROCS(0)
