package lsm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/tierkv/tierkv/lsm/vfs"
)

var crashSeeds = 2000

// TestCrashMemFS runs random synced and unsynced writes with background
// flushes and compactions, takes a crash image of the file system at a
// random moment (unsynced data dropped, a random prefix of unsynced tails
// kept), reopens it, and checks that every acknowledged synced write is
// there and that every value read is one that was written, whole.
func TestCrashMemFS(t *testing.T) {
	n := crashSeeds
	if testing.Short() {
		n = 200
	}
	for seed := uint64(1); seed <= uint64(n); seed++ {
		crashOnce(t, seed)
	}
	t.Logf("checked %d crash images", n)
}

func crashOnce(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 2))
	fs := vfs.NewMemFS()
	clock := newManualClock()
	strategy := CompactionStrategy(seed % 2)
	db, err := Open("/db", smallOptions(fs, strategy, clock))
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	written := map[string]map[uint64][]byte{} // key -> version -> value
	acked := map[string]uint64{}              // key -> highest synced version acknowledged
	ops := 20 + rng.IntN(200)
	var crashed *vfs.MemFS
	crashAt := rng.IntN(ops)
	for i := 0; i < ops; i++ {
		if i == crashAt {
			crashed = fs.CrashClone(rng)
		}
		k := fmt.Sprintf("k%03d", rng.IntN(100))
		v := rng.Uint64N(1<<30) + 1
		val := []byte(fmt.Sprintf("%s/%d/%s", k, v, bytes.Repeat([]byte{'z'}, rng.IntN(2000))))
		if written[k] == nil {
			written[k] = map[uint64][]byte{}
		}
		written[k][v] = val
		sync := rng.IntN(3) != 0
		wo := NoSync
		if sync {
			wo = Sync
		}
		if err := db.Set([]byte(k), val, v, wo); err != nil {
			t.Fatalf("seed %d: set: %v", seed, err)
		}
		if sync && i < crashAt && v > acked[k] {
			acked[k] = v
		}
		if rng.IntN(40) == 0 {
			_ = db.Flush()
		}
	}
	if err := db.Close(); err != nil {
		t.Fatalf("seed %d: close: %v", seed, err)
	}
	db, err = Open("/db", smallOptions(crashed, strategy, clock))
	if err != nil {
		t.Fatalf("seed %d: reopen after crash: %v", seed, err)
	}
	defer db.Close()
	for k, v := range acked {
		got, ver, err := db.Get([]byte(k))
		if err != nil || ver < v {
			t.Fatalf("seed %d: acknowledged %s@%d lost: got v%d, %v", seed, k, v, ver, err)
		}
		if !bytes.Equal(got, written[k][ver]) {
			t.Fatalf("seed %d: %s@%d reads %q, which was never written whole", seed, k, ver, got)
		}
	}
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if !bytes.Equal(it.Value(), written[string(it.Key())][it.Version()]) {
			t.Fatalf("seed %d: iteration found %s@%d that was never written whole", seed, it.Key(), it.Version())
		}
	}
	if err := it.Close(); err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
}

// TestSyncFailureNotAcknowledged fails WAL fsyncs and checks that no write
// whose sync failed is acknowledged, that the DB then refuses writes, and
// that everything acknowledged before survives a crash.
func TestSyncFailureNotAcknowledged(t *testing.T) {
	for seed := uint64(1); seed <= 50; seed++ {
		mem := vfs.NewMemFS()
		rng := rand.New(rand.NewPCG(seed, 3))
		failAfter := rng.IntN(30)
		var syncs int
		var mu sync.Mutex
		efs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
			if op != vfs.OpSync || !strings.HasSuffix(name, ".log") {
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			syncs++
			return syncs > failAfter
		}}
		clock := newManualClock()
		db, err := Open("/db", smallOptions(efs, Leveled, clock))
		if err != nil {
			t.Fatal(err)
		}
		acked := map[string]uint64{}
		var failed bool
		for i := 0; i < 60; i++ {
			k := fmt.Sprintf("k%02d", rng.IntN(20))
			v := uint64(i + 1)
			err := db.Set([]byte(k), []byte(k), v, Sync)
			if err == nil {
				if failed {
					t.Fatalf("seed %d: a write was acknowledged after a failed fsync", seed)
				}
				acked[k] = v
				continue
			}
			if !errors.Is(err, vfs.ErrInjected) && !failed {
				t.Fatalf("seed %d: first failure is not the injected one: %v", seed, err)
			}
			failed = true
		}
		if !failed {
			t.Fatalf("seed %d: no failure was injected", seed)
		}
		crashed := mem.CrashClone(nil)
		db.Close()
		db, err = Open("/db", smallOptions(crashed, Leveled, clock))
		if err != nil {
			t.Fatalf("seed %d: reopen: %v", seed, err)
		}
		for k, v := range acked {
			if _, ver, err := db.Get([]byte(k)); err != nil || ver < v {
				t.Fatalf("seed %d: acknowledged %s@%d lost: v%d %v", seed, k, v, ver, err)
			}
		}
		db.Close()
	}
}

// The kill -9 test runs the test binary itself as a child process that
// writes with sync and prints each acknowledgement; the parent kills it with
// SIGKILL after a random number of acknowledgements and checks them all.
const killChildEnv = "TIERKV_KILL_CHILD_DIR"

func runKillChild() {
	dir := os.Getenv(killChildEnv)
	seed, _ := strconv.ParseUint(os.Getenv("TIERKV_KILL_CHILD_SEED"), 10, 64)
	opts := &Options{MemTableSize: 256 << 10, TargetFileSize: 256 << 10, LBaseMaxBytes: 1 << 20, L0CompactionThreshold: 2, Logger: discardLogger}
	db, err := Open(dir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	rng := rand.New(rand.NewPCG(seed, 4))
	out := bufio.NewWriter(os.Stdout)
	for i := uint64(1); ; i++ {
		k := fmt.Sprintf("k%05d", rng.IntN(5000))
		v := seed<<32 | i
		val := bytes.Repeat([]byte{byte('a' + i%26)}, 100+rng.IntN(4000))
		if err := db.Set([]byte(k), val, v, Sync); err != nil {
			fmt.Fprintln(os.Stderr, "child set:", err)
			os.Exit(4)
		}
		fmt.Fprintf(out, "%s %d %d %c\n", k, v, len(val), val[0])
		out.Flush()
	}
}

type killAck struct {
	version uint64
	size    int
	fill    byte
}

func TestKill9(t *testing.T) {
	cycles := 50
	if s := os.Getenv("TIERKV_CRASH_CYCLES"); s != "" {
		cycles, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		cycles = 10
	}
	dir := t.TempDir()
	acked := map[string]killAck{}
	rng := rand.New(rand.NewPCG(99, 5))
	total := 0
	for cycle := 1; cycle <= cycles; cycle++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir, fmt.Sprintf("TIERKV_KILL_CHILD_SEED=%d", cycle))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 1 + rng.IntN(400)
		sc := bufio.NewScanner(stdout)
		n := 0
		for sc.Scan() {
			var k string
			var a killAck
			if _, err := fmt.Sscanf(sc.Text(), "%s %d %d %c", &k, &a.version, &a.size, &a.fill); err != nil {
				t.Fatalf("cycle %d: bad child line %q: %v", cycle, sc.Text(), err)
			}
			if a.version > acked[k].version {
				acked[k] = a
			}
			n++
			if n == killAfter {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
		_ = cmd.Wait()
		if n < killAfter {
			t.Fatalf("cycle %d: child exited after %d acknowledgements: %s", cycle, n, stderr.String())
		}
		total += n
		db, err := Open(dir, &Options{Logger: discardLogger})
		if err != nil {
			t.Fatalf("cycle %d: reopen after kill -9: %v", cycle, err)
		}
		for k, a := range acked {
			v, ver, err := db.Get([]byte(k))
			if err != nil || ver < a.version {
				t.Fatalf("cycle %d: acknowledged %s@%d lost: v%d %v", cycle, k, a.version, ver, err)
			}
			if ver == a.version && (len(v) != a.size || v[0] != a.fill || v[len(v)-1] != a.fill) {
				t.Fatalf("cycle %d: %s@%d is torn: %d bytes", cycle, k, ver, len(v))
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("kill -9: %d cycles, %d acknowledged writes checked, %d distinct keys", cycles, total, len(acked))
}

// TestCrashBetweenSegmentRenameAndManifest crashes a flush after its WAL
// segment was renamed to a blob file but before the manifest edit that
// references it was durable: recovery must replay the renamed segment.
func TestCrashBetweenSegmentRenameAndManifest(t *testing.T) {
	mem := vfs.NewMemFS()
	var failManifest sync.Mutex
	fail := false
	efs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
		failManifest.Lock()
		defer failManifest.Unlock()
		return fail && op == vfs.OpSync && strings.Contains(name, "MANIFEST")
	}}
	var crashed *vfs.MemFS
	opts := smallOptions(efs, Leveled, newManualClock())
	opts.MemTableSize = 1 << 20
	opts.EventListener.BackgroundError = func(error) {
		if crashed == nil {
			crashed = mem.CrashClone(nil)
		}
	}
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	val := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 500) }
	for i := 0; i < 100; i++ {
		if err := db.Set([]byte(fmt.Sprintf("k%03d", i)), val(i), uint64(i+1), Sync); err != nil {
			t.Fatal(err)
		}
	}
	failManifest.Lock()
	fail = true
	failManifest.Unlock()
	if err := db.Flush(); err == nil {
		t.Fatal("flush succeeded with the manifest failing")
	}
	if err := db.Set([]byte("after"), []byte("x"), 1000, Sync); err == nil {
		t.Fatal("a write was accepted after a manifest failure")
	}
	db.Close()
	if crashed == nil {
		t.Fatal("no crash image was taken")
	}
	names, _ := crashed.List("/db")
	var blobs int
	for _, n := range names {
		if strings.HasSuffix(n, ".blob") {
			blobs++
		}
	}
	if blobs == 0 {
		t.Fatalf("the crash image holds no renamed segment: %v", names)
	}
	db, err = Open("/db", smallOptions(crashed, Leveled, newManualClock()))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	for i := 0; i < 100; i++ {
		v, _, err := db.Get([]byte(fmt.Sprintf("k%03d", i)))
		if err != nil || !bytes.Equal(v, val(i)) {
			t.Fatalf("k%03d after recovery: %v", i, err)
		}
	}
	if m := db.Metrics(); m.BlobFiles != 1 {
		t.Fatalf("%d blob files after recovery, want the replayed segment", m.BlobFiles)
	}
}
