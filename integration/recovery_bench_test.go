package integration

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierkv/tierkv/client"
	"github.com/tierkv/tierkv/objectstore/miniotest"
)

// BenchmarkRecovery (make bench-recovery) replaces a node holding 1 GiB and
// 4 GiB (TIERKV_BENCH_SIZES, in GiB) of a three-node cluster of real
// processes tiering to a local MinIO, twice in one run:
//
//   - tierkv: --replace restores the engine from the manifest backup in
//     MinIO (tables referenced, not downloaded), serves, and streams from
//     its peers only what is newer than the backup; then hydrates;
//   - streaming: --replace --replace-from-peers streams every range from
//     one replica, as Cassandra and ScyllaDB replace a node; it can serve
//     its ranges only once the stream is complete.
//
// It prints time to first served read and to full redundancy (every write
// on three replicas) for both, bytes from the bucket and from peers, and the
// ratios streaming/tierkv.
func BenchmarkRecovery(b *testing.B) {
	sizes := []int{1, 4}
	if s := os.Getenv("TIERKV_BENCH_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("TIERKV_BENCH_SIZES=%q", s)
			}
			sizes = append(sizes, n)
		}
	}
	for range b.N {
		for _, gib := range sizes {
			benchRecovery(b, gib)
		}
	}
}

// recoveryRun is one replacement's figures.
type recoveryRun struct {
	serving, redundant, hydrated time.Duration
	fromBucket, fromPeers        int64
}

func benchRecovery(b *testing.B, gib int) {
	s := miniotest.StartOwn(b)
	// Streams unthrottled (anti_entropy.rate, default 32 MiB/s, bounds
	// both ways of replacing): both run at the machine's speed.
	c := startClusterWith(b, 3, append(minioArgs(b, s), "--memtable-size", "67108864", "--anti-entropy-rate", "-1"))
	const valueSize = 64 << 10
	keys := gib << 30 / valueSize
	ctx := context.Background()
	cl := c.client(0, 1)
	q := client.WithConsistency(client.Quorum)

	b.Logf("[%d GiB] loading %d keys of %d KiB at QUORUM", gib, keys, valueSize>>10)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var loadErr atomic.Value
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := make([]byte, valueSize)
			for {
				k := next.Add(1) - 1
				if k >= int64(keys) {
					return
				}
				rand.Read(v)
				if _, err := cl.Put(ctx, fmt.Appendf(nil, "k%08d", k), v, q); err != nil {
					loadErr.Store(err)
					return
				}
				if k%4096 == 0 {
					fmt.Fprintf(os.Stderr, "[progress] load %d/%d keys, %v\n", k, keys, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := loadErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.Logf("[%d GiB] loaded in %v (%.0f MB/s at QUORUM)", gib, time.Since(start).Round(time.Second), float64(int64(keys)*valueSize)/time.Since(start).Seconds()/1e6)
	// A node's data is older than a few seconds: wait out the default
	// replace_lookback (30 s), so that the backup's catch-up window holds
	// only what is written after it, as it would for data that took more
	// than a minute to accumulate.
	b.Logf("[%d GiB] waiting 31 s (replace_lookback) before the backup", gib)
	time.Sleep(31 * time.Second)
	start = time.Now()
	post(b, c.procs[2].http, "/v1/admin/backup", nil)
	b.Logf("[%d GiB] n3's manifest backup (flush and upload) took %v", gib, time.Since(start).Round(time.Second))
	// Writes newer than the backup: 1% of the data.
	for k := range keys / 100 {
		v := make([]byte, valueSize)
		rand.Read(v)
		if _, err := cl.Put(ctx, fmt.Appendf(nil, "new%08d", k), v, q); err != nil {
			b.Fatal(err)
		}
	}

	tierkv := replaceOnce(b, c, gib, "tierkv", nil)
	streaming := replaceOnce(b, c, gib, "streaming", []string{"--replace-from-peers"})

	fmt.Printf("\n# recovery of a node holding %d GiB (%d keys of %d KiB, RF 3 on 3 processes, MinIO)\n", gib, keys, valueSize>>10)
	for _, r := range []struct {
		name string
		r    recoveryRun
	}{{"tierkv", tierkv}, {"streaming", streaming}} {
		fmt.Printf("%-9s serving %7.2fs  redundant %7.2fs  hydrated %7.2fs  from bucket %6.0f MB  from peers %6.0f MB\n",
			r.name, r.r.serving.Seconds(), r.r.redundant.Seconds(), r.r.hydrated.Seconds(), float64(r.r.fromBucket)/1e6, float64(r.r.fromPeers)/1e6)
	}
	fmt.Printf("ratio replace-serving streaming/tierkv = %.2f\n", streaming.serving.Seconds()/tierkv.serving.Seconds())
	fmt.Printf("ratio replace-redundant streaming/tierkv = %.2f\n", streaming.redundant.Seconds()/tierkv.redundant.Seconds())
	// Not a target: redundancy counts the restored tables in the bucket as
	// the replacement's copy; this is the time until they are local too.
	fmt.Printf("(hydrated: streaming/tierkv = %.2f)\n", streaming.hydrated.Seconds()/tierkv.hydrated.Seconds())
}

// replaceOnce kills n3 with SIGKILL, deletes its data directory and starts a
// replacement with extra flags; it measures from the start command.
func replaceOnce(b *testing.B, c *cluster, gib int, name string, extra []string) recoveryRun {
	c.kill(2)
	if err := os.RemoveAll(c.procs[2].dir); err != nil {
		b.Fatal(err)
	}
	c.waitDown(2)
	c.procs[2].extra = append([]string{"--replace", "n3"}, extra...)
	fromPeers := len(extra) > 0
	start := time.Now()
	c.start(2)
	var run recoveryRun
	probe := []byte("k00000007")
	var lastPrint time.Time
	for {
		st, err := getStatus(c.procs[2].http)
		if err == nil && st.Replace != nil && st.Replace.Phase == "failed" {
			b.Fatalf("%s replacement failed: %s", name, st.Replace.LastError)
		}
		caughtUp := err == nil && st.Replace != nil && (st.Replace.Phase == "hydrating" || st.Replace.Phase == "done")
		if run.serving == 0 {
			// Streaming serves its ranges once it has them all.
			if !fromPeers || caughtUp {
				if r, err := c.readReplica(2, probe); err == nil && r.Found {
					run.serving = time.Since(start)
				}
			}
		}
		if run.redundant == 0 && caughtUp {
			run.redundant = time.Since(start)
		}
		if err == nil && st.Replace != nil && st.Replace.Phase == "done" && run.serving > 0 {
			run.hydrated = time.Since(start)
			run.fromBucket, run.fromPeers = st.Replace.BytesFromBucket, st.Replace.BytesFromPeers
			break
		}
		if time.Since(lastPrint) > 5*time.Second && err == nil && st.Replace != nil {
			fmt.Fprintf(os.Stderr, "[progress] %d GiB %s: %s, %.0f MB from peers, %.0f MB from the bucket, %v\n", gib, name, st.Replace.Phase,
				float64(st.Replace.BytesFromPeers)/1e6, float64(st.Replace.BytesFromBucket)/1e6, time.Since(start).Round(time.Second))
			lastPrint = time.Now()
		}
		if time.Since(start) > 30*time.Minute {
			b.Fatalf("%s replacement did not finish in 30 minutes", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fromPeers {
		run.hydrated = run.redundant // nothing to hydrate: everything streamed
	}
	c.waitReady(3)
	b.Logf("[%d GiB] %s: serving %v, redundant %v, hydrated %v", gib, name, run.serving.Round(time.Millisecond), run.redundant.Round(time.Millisecond), run.hydrated.Round(time.Millisecond))
	return run
}
