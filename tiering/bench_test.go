package tiering

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/erasure"
)

// BenchmarkTiering is `make bench-tiering`: against a local MinIO (started
// by miniotest, or TIERKV_MINIO_ENDPOINT) it measures, for each size in
// TIERKV_BENCH_SIZES (GiB, default "1,4"): time from restore start to the
// first served read, cold point-read latency with an empty and a warm disk
// cache, hydration throughput against raw GET throughput of the same
// objects; then erasure encode and reconstruct throughput. It prints its
// figures and runs once, whatever b.N:
//
//	go test -run '^$' -bench '^BenchmarkTiering$' -benchtime 1x -timeout 60m ./tiering/
func BenchmarkTiering(b *testing.B) {
	var t testing.TB = b
	sizes := os.Getenv("TIERKV_BENCH_SIZES")
	if sizes == "" {
		sizes = "1,4"
	}
	bucket, srv := minioBucket(t)
	for _, s := range strings.Split(sizes, ",") {
		gib, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			t.Fatal(err)
		}
		benchSize(t, bucket, srv.Pid(), fmt.Sprintf("node-%sg", strings.TrimSpace(s)), int64(gib*(1<<30)))
	}
	benchErasure(t)
}

func report(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// cpuSample is the CPU time used so far by this process, by the MinIO
// server (if its pid is known) and by the whole machine, from /proc
// (Linux; zero elsewhere).
type cpuSample struct {
	self, minio, busy, idle time.Duration
}

func sampleCPU(minioPid int) cpuSample {
	var c cpuSample
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	const tick = 10 * time.Millisecond // USER_HZ = 100
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", minioPid)); minioPid > 0 && err == nil {
		if i := bytes.LastIndexByte(b, ')'); i > 0 {
			// Fields after the command: state is field 3; utime and
			// stime are fields 14 and 15.
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				k, _ := strconv.ParseInt(f[12], 10, 64)
				c.minio = time.Duration(u+k) * tick
			}
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i := 1; i < len(f) && i <= 8; i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			if i == 4 || i == 5 { // idle, iowait
				c.idle += time.Duration(v) * tick
			} else {
				c.busy += time.Duration(v) * tick
			}
		}
	}
	return c
}

// cpuSince describes the CPU used since start.
func cpuSince(start cpuSample, minioPid int) string {
	end := sampleCPU(minioPid)
	busy, idle := end.busy-start.busy, end.idle-start.idle
	out := fmt.Sprintf("CPU: this process %.2f s", (end.self - start.self).Seconds())
	if minioPid > 0 {
		out += fmt.Sprintf(", MinIO %.2f s", (end.minio - start.minio).Seconds())
	}
	if busy+idle > 0 {
		out += fmt.Sprintf(", machine %.0f%% busy", 100*float64(busy)/float64(busy+idle))
	}
	return out
}

func benchSize(t testing.TB, bucket objectstore.Bucket, minioPid int, node string, size int64) {
	ctx := context.Background()
	label := fmt.Sprintf("%.1f GiB", float64(size)/(1<<30))
	const valueSize = 500 // below the value separation threshold: values live in the tables
	n := int(size / (valueSize + 20))
	key := func(i int) []byte { return []byte(fmt.Sprintf("key-%012d", i)) }
	val := func(i int) []byte {
		v := bytes.Repeat([]byte{byte('a' + i%26)}, valueSize)
		copy(v, fmt.Sprintf("%d", i))
		return v
	}
	dbOpts := func(p *Manager) *lsm.Options {
		return &lsm.Options{Provider: p, Logger: discard, L0CompactionThreshold: 1000, L0StopWritesThreshold: 2000,
			DisableAutomaticCompactions: true, BlockCacheSize: -1, Compression: lsm.NoCompression}
	}
	mopts := func(dir string) Options {
		return Options{Dir: dir, NodeID: node, Bucket: bucket, Logger: discard, Policy: allCold(lsm.Leveled),
			DisableBackground: true, UploadConcurrency: 4, CacheSize: 4 << 30}
	}

	// Build the source node: every table cold and uploaded, then a backup.
	src := filepath.Join(t.TempDir(), "src")
	m, err := Open(mopts(src))
	if err != nil {
		t.Fatal(err)
	}
	db, err := lsm.Open(src, dbOpts(m))
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(db)
	start := time.Now()
	var b lsm.Batch
	for i := 0; i < n; i++ {
		b.Set(key(i), val(i), uint64(i+1))
		if b.Len() == 1000 || i == n-1 {
			if err := db.Apply(&b, lsm.NoSync); err != nil {
				t.Fatal(err)
			}
			b = lsm.Batch{}
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	load := time.Since(start)
	start = time.Now()
	if err := m.Upload(ctx); err != nil {
		t.Fatal(err)
	}
	up := time.Since(start)
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	met := m.Metrics()
	report("tiering %s: %d keys loaded in %v; uploaded %d objects, %.0f MB in %v (%.0f MB/s)", label, n, load.Round(time.Millisecond),
		met.ObjectsUploaded, float64(met.BytesUploaded)/1e6, up.Round(time.Millisecond), float64(met.BytesUploaded)/1e6/up.Seconds())
	db.Close()
	m.Close()
	os.RemoveAll(src)

	// Write back the load phase's dirty pages (the source and MinIO's
	// copy) so that they do not compete with what is measured.
	syscall.Sync()

	// Restore on a new directory and serve.
	dst := filepath.Join(t.TempDir(), "dst")
	start = time.Now()
	info, err := Restore(ctx, RestoreOptions{Dir: dst, NodeID: node, Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	m, err = Open(mopts(dst))
	if err != nil {
		t.Fatal(err)
	}
	db, err = lsm.Open(dst, dbOpts(m))
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(db)
	rng := rand.New(rand.NewPCG(1, 2))
	first := rng.IntN(n)
	if v, _, err := db.Get(key(first)); err != nil || !bytes.Equal(v, val(first)) {
		t.Fatalf("first read: %v", err)
	}
	ttfr := time.Since(start)
	report("tiering %s: restore start to first served read: %v (%d objects, %.1f MB of metadata downloaded)", label,
		ttfr.Round(time.Millisecond), info.Objects, float64(info.MetaBytes)/1e6)

	// Cold point reads, empty then warm disk cache.
	keys := make([]int, 500)
	for i := range keys {
		keys[i] = rng.IntN(n)
	}
	lat := func() (p50, p99 time.Duration) {
		var d []time.Duration
		for _, k := range keys {
			s := time.Now()
			if v, _, err := db.Get(key(k)); err != nil || !bytes.Equal(v, val(k)) {
				t.Fatalf("read %d: %v", k, err)
			}
			d = append(d, time.Since(s))
		}
		slices.Sort(d)
		return d[len(d)/2], d[len(d)*99/100]
	}
	p50, p99 := lat()
	report("tiering %s: cold point read, empty cache: p50 %v p99 %v", label, p50.Round(time.Microsecond), p99.Round(time.Microsecond))
	p50, p99 = lat()
	report("tiering %s: cold point read, warm cache:  p50 %v p99 %v", label, p50.Round(time.Microsecond), p99.Round(time.Microsecond))

	// Raw GET throughput of the same objects, same concurrency.
	entries := m.cat.Entries()
	raw := func() float64 {
		cpu := sampleCPU(minioPid)
		defer func() { report("tiering %s: raw GET %s", label, cpuSince(cpu, minioPid)) }()
		s := time.Now()
		var total int64
		var mu sync.Mutex
		sem := make(chan struct{}, 4)
		var wg sync.WaitGroup
		for _, e := range entries {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				rc, err := bucket.Get(ctx, m.objectName(e.Type, e.Num))
				if err != nil {
					t.Error(err)
					return
				}
				k, err := io.Copy(io.Discard, rc)
				rc.Close()
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				total += k
				mu.Unlock()
			}()
		}
		wg.Wait()
		return float64(total) / time.Since(s).Seconds()
	}
	raw1 := raw()
	syscall.Sync()
	cpu := sampleCPU(minioPid)
	s := time.Now()
	if err := m.Hydrate(ctx, HydrateOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	hyd := float64(m.Metrics().HydratedBytes) / time.Since(s).Seconds()
	report("tiering %s: hydration %s", label, cpuSince(cpu, minioPid))
	raw2 := raw()
	rawMean := (raw1 + raw2) / 2
	report("tiering %s: hydration %.0f MB/s; raw MinIO GET %.0f MB/s (runs %.0f, %.0f)", label, hyd/1e6, rawMean/1e6, raw1/1e6, raw2/1e6)
	report("ratio hydrate tierkv/raw-get = %.2f", hyd/rawMean)
	db.Close()
	m.Close()
	// Leave the bucket small for the next size.
	_ = objectstore.Iter(ctx, bucket, node+"/", func(name string) error { return bucket.Delete(ctx, name) })
	_ = vfs.Default
}

func benchErasure(t testing.TB) {
	ctx := context.Background()
	var bs []objectstore.Bucket
	for i := 0; i < 6; i++ {
		bs = append(bs, objectstore.NewMemBucket())
	}
	eb, err := erasure.New(bs, erasure.Options{DataShards: 4, ParityShards: 2})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	const rounds = 4
	s := time.Now()
	for i := 0; i < rounds; i++ {
		if err := eb.Put(ctx, fmt.Sprintf("o%d", i), bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	enc := float64(rounds*len(data)) / time.Since(s).Seconds()
	for i := 0; i < rounds; i++ {
		_ = bs[0].Delete(ctx, fmt.Sprintf("o%d", i))
		_ = bs[2].Delete(ctx, fmt.Sprintf("o%d", i))
	}
	s = time.Now()
	for i := 0; i < rounds; i++ {
		got, err := objectstore.ReadAll(ctx, eb, fmt.Sprintf("o%d", i))
		if err != nil || len(got) != len(data) {
			t.Fatalf("reconstruct: %v", err)
		}
	}
	rec := float64(rounds*len(data)) / time.Since(s).Seconds()
	report("erasure RS(4,2) 64 MiB objects: encode %.0f MB/s, reconstruct (2 data shards lost) %.0f MB/s", enc/1e6, rec/1e6)
}
