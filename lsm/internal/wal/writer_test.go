package wal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/vfs"
)

func TestSegmentName(t *testing.T) {
	for _, tc := range []struct {
		num  base.FileNum
		name string
	}{
		{0, "000000.log"},
		{7, "000007.log"},
		{123456, "123456.log"},
		{1234567, "1234567.log"},
		{1<<64 - 1, "18446744073709551615.log"},
	} {
		if got := SegmentName(tc.num); got != tc.name {
			t.Errorf("SegmentName(%d) = %q, want %q", tc.num, got, tc.name)
		}
		if got, ok := ParseSegmentName(tc.name); !ok || got != tc.num {
			t.Errorf("ParseSegmentName(%q) = %d, %t, want %d, true", tc.name, got, ok, tc.num)
		}
	}
	for _, name := range []string{
		"", ".log", "log", "000007", "000007.log.tmp", "000007.sst", "+00007.log",
		"-00007.log", "0x0007.log", "00 007.log", "18446744073709551616.log", "MANIFEST",
	} {
		if got, ok := ParseSegmentName(name); ok {
			t.Errorf("ParseSegmentName(%q) = %d, true, want false", name, got)
		}
	}
}

// TestRoundTrip checks that replay returns exactly the appended payloads,
// in order, on MemFS and on the OS file system.
func TestRoundTrip(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, tc := range []struct {
		name string
		fs   func(t *testing.T) (vfs.FS, string)
	}{
		{"mem", func(t *testing.T) (vfs.FS, string) { return newTestFS(t), testDir }},
		{"os", func(t *testing.T) (vfs.FS, string) { return vfs.Default, t.TempDir() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, dir := tc.fs(t)
			rng := rand.New(rand.NewPCG(1, 2))
			w, err := Create(Options{FS: fs, Dir: dir, PreallocateSize: 1 << 20}, 42)
			if err != nil {
				t.Fatal(err)
			}
			var want [][]byte
			var size int64
			for i := range 300 {
				var n int
				switch r := rng.IntN(10); {
				case i < 2:
					n = 0 // empty payloads are records too
				case r < 6:
					n = rng.IntN(200)
				case r < 9:
					n = rng.IntN(10 << 10)
				default:
					n = rng.IntN(100<<10 + 1)
				}
				if i == 3 {
					n = 100 << 10
				}
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(rng.Uint32())
				}
				want = append(want, append([]byte(nil), p...))
				if err := w.Append(p, i%25 == 0); err != nil {
					t.Fatal(err)
				}
				// The payload was copied: scribbling on it must not
				// change the record.
				for j := range p {
					p[j] ^= 0xff
				}
				size += int64(headerSize + n)
				if w.Size() != size {
					t.Fatalf("Size() = %d, want %d", w.Size(), size)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := w.Append([]byte("x"), false); !errors.Is(err, ErrClosed) {
				t.Fatalf("Append after Close = %v, want ErrClosed", err)
			}
			st := w.Stats()
			if st.Records != uint64(len(want)) || st.BytesWritten != uint64(size) {
				t.Fatalf("Stats = %+v, want %d records, %d bytes", st, len(want), size)
			}
			if st.Syncs == 0 || st.Writes == 0 {
				t.Fatalf("Stats = %+v, want syncs and writes", st)
			}

			path := fs.PathJoin(dir, SegmentName(42))
			got, res, err := replayAll(t, fs, path, 42)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("replayed %d records, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("record %d differs: %d bytes, want %d", i, len(got[i]), len(want[i]))
				}
			}
			if res.ValidSize != size || res.TornTail || res.TruncatedBytes != 0 {
				t.Fatalf("Result = %+v, want ValidSize %d and no torn tail", res, size)
			}
		})
	}
}

// TestGroupCommit checks that concurrent synced appends share syncs and
// that all of them replay in per-writer order.
func TestGroupCommit(t *testing.T) {
	defer goleak.VerifyNone(t)
	const writers, perWriter = 16, 50
	mem := newTestFS(t)
	// Hold the first sync until every writer has buffered its first
	// record, so that at least that group has all 16 records: without
	// group commit, Syncs would equal Records.
	var release sync.Once
	gate := make(chan struct{})
	fs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
		if op == vfs.OpSync && strings.HasSuffix(name, ".log") {
			<-gate
		}
		return false
	}}
	w, err := Create(Options{FS: fs, Dir: testDir}, 3)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range perWriter {
				id := uint64(g)<<32 | uint64(i)
				if err := w.Append(testPayload(id, payloadSize(id, 1024)), true); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	waitFor(t, "all writers to buffer a record", func() bool { return w.Stats().Records >= writers })
	release.Do(func() { close(gate) })
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	t.Logf("stats: %+v, mean group size %.1f", st, float64(st.Records)/float64(st.Syncs))
	if st.Records != writers*perWriter {
		t.Fatalf("Records = %d, want %d", st.Records, writers*perWriter)
	}
	if st.Syncs > st.Records-(writers-1) {
		t.Fatalf("Syncs = %d for %d records: no group commit", st.Syncs, st.Records)
	}
	got, _, err := replayAll(t, mem, segPath(3), 3)
	if err != nil {
		t.Fatal(err)
	}
	next := make([]uint64, writers)
	for _, p := range got {
		id, ok := checkPayload(p)
		if !ok {
			t.Fatalf("bad payload for id %#x", id)
		}
		g, i := id>>32, id&(1<<32-1)
		if g >= writers || i != next[g] {
			t.Fatalf("writer %d: record %d, want %d", g, i, next[g])
		}
		next[g]++
	}
	if len(got) != writers*perWriter {
		t.Fatalf("replayed %d records, want %d", len(got), writers*perWriter)
	}
}

// TestRecycled checks that a recycled segment replays only its own
// records, not the stale ones of the segment it used to be.
func TestRecycled(t *testing.T) {
	defer goleak.VerifyNone(t)
	fs := newTestFS(t)
	opts := Options{FS: fs, Dir: testDir}
	a, err := Create(opts, 5)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := a.Append(testPayload(uint64(1000+i), payloadSize(uint64(1000+i), 2000)), i%10 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	origA := readFile(t, fs, segPath(5))
	sizeA := int64(len(origA))

	for _, n := range []int{0, 1, 30} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			// Recycle a fresh copy of segment A each time.
			writeFile(t, fs, segPath(5), origA)
			b, err := CreateRecycled(opts, 6, 5)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fs.Stat(segPath(5)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("old segment still exists: %v", err)
			}
			for i := range n {
				if err := b.Append(testPayload(uint64(i), payloadSize(uint64(i), 500)), true); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if got := fileSize(t, fs, segPath(6)); got != sizeA {
				t.Fatalf("recycled file has %d bytes, want the old %d overwritten in place", got, sizeA)
			}
			got, res, err := replayAll(t, fs, segPath(6), 6)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != n {
				t.Fatalf("replayed %d records, want %d", len(got), n)
			}
			for i, p := range got {
				if id, ok := checkPayload(p); !ok || id != uint64(i) {
					t.Fatalf("record %d: id %d ok %t", i, id, ok)
				}
			}
			if res.TornTail || res.ValidSize != b.Size() {
				t.Fatalf("Result = %+v, want ValidSize %d and no torn tail", res, b.Size())
			}
		})
	}

	// A crash before the first sync leaves the old contents under the new
	// name: nothing replays.
	t.Run("crash-before-sync", func(t *testing.T) {
		writeFile(t, fs, segPath(5), origA)
		b, err := CreateRecycled(opts, 7, 5)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append([]byte("not synced"), false); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the write", func() bool { return b.Stats().BytesWritten == uint64(b.Size()) })
		crashed := fs.CrashClone(rand.New(rand.NewPCG(1, 1)))
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		got, res, err := replayAll(t, crashed, segPath(7), 7)
		if err != nil || len(got) != 0 || res.TornTail {
			t.Fatalf("replay after crash: %d records, %+v, %v; want none", len(got), res, err)
		}
	})

	if _, err := CreateRecycled(opts, 5+1<<32, 5); err == nil {
		t.Fatal("recycling with the same log number succeeded")
	}
}

// TestSyncFailure checks that an injected fsync failure reaches every
// waiting synced Append and all later ones, and is never acknowledged.
func TestSyncFailure(t *testing.T) {
	defer goleak.VerifyNone(t)
	const writers = 16
	mem := newTestFS(t)
	var syncs atomic.Int64
	hold := make(chan struct{})
	fs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
		if op != vfs.OpSync || !strings.HasSuffix(name, ".log") {
			return false
		}
		switch syncs.Add(1) {
		case 1:
			return false // the first sync works
		case 2:
			<-hold // the second fails once all writers are waiting
			return true
		}
		return false // later syncs would work: they must not happen
	}}
	w, err := Create(Options{FS: fs, Dir: testDir}, 9)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append([]byte("durable"), true); err != nil {
		t.Fatal(err)
	}
	// The second sync blocks with one record; all others queue behind it.
	errs := make(chan error, writers)
	for g := range writers {
		go func() { errs <- w.Append(fmt.Appendf(nil, "writer %d", g), true) }()
	}
	waitFor(t, "all writers to buffer", func() bool { return w.Stats().Records == writers+1 })
	close(hold)
	for range writers {
		if err := <-errs; !errors.Is(err, vfs.ErrInjected) {
			t.Fatalf("synced Append = %v, want the injected error", err)
		}
	}
	for _, sync := range []bool{true, false} {
		if err := w.Append([]byte("later"), sync); !errors.Is(err, vfs.ErrInjected) {
			t.Fatalf("Append(sync=%t) after failure = %v, want the sticky error", sync, err)
		}
	}
	if err := w.Close(); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("Close = %v, want the sticky error", err)
	}
	if n := syncs.Load(); n != 2 {
		t.Fatalf("%d syncs attempted, want 2: a failed sync must not be retried", n)
	}
	if st := w.Stats(); st.Syncs != 1 {
		t.Fatalf("Stats.Syncs = %d, want 1", st.Syncs)
	}
	got, _, err := replayAll(t, mem.CrashClone(nil), segPath(9), 9)
	if err != nil || len(got) == 0 || string(got[0]) != "durable" {
		t.Fatalf("after crash: %q, %v; want the durable record first", got, err)
	}
}

// TestWriteFailure checks that a failed write fails the Writer.
func TestWriteFailure(t *testing.T) {
	defer goleak.VerifyNone(t)
	mem := newTestFS(t)
	var fail atomic.Bool
	fs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
		return op == vfs.OpWrite && fail.Load()
	}}
	w, err := Create(Options{FS: fs, Dir: testDir}, 9)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append([]byte("ok"), true); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	if err := w.Append([]byte("fails"), true); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("Append = %v, want the injected error", err)
	}
	fail.Store(false)
	if err := w.Append([]byte("later"), true); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("Append after failure = %v, want the sticky error", err)
	}
	if err := w.Close(); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("Close = %v, want the sticky error", err)
	}
}

// TestSyncFailureRandom injects a sync failure at a random point under
// concurrent appends and checks that every acknowledged record survives a
// crash.
func TestSyncFailureRandom(t *testing.T) {
	defer goleak.VerifyNone(t)
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 7))
		mem := newTestFS(t)
		failAt := 1 + rng.Int64N(40)
		var syncs atomic.Int64
		fs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
			return op == vfs.OpSync && strings.HasSuffix(name, ".log") && syncs.Add(1) >= failAt
		}}
		w, err := Create(Options{FS: fs, Dir: testDir, MaxPendingBytes: 4096}, 11)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		acked := map[uint64]bool{}
		var failed atomic.Int64
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 40 {
					id := uint64(g)<<32 | uint64(i)
					sync := i%4 != 0
					err := w.Append(testPayload(id, payloadSize(id, 600)), sync)
					if err != nil {
						if !errors.Is(err, vfs.ErrInjected) {
							t.Errorf("Append = %v, want the injected error", err)
						}
						failed.Add(1)
						continue
					}
					if sync {
						mu.Lock()
						acked[id] = true
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		closeErr := w.Close()
		if (closeErr != nil) != (failed.Load() > 0 || syncs.Load() >= failAt) {
			t.Fatalf("seed %d: Close = %v after %d failed appends and %d syncs (fail at %d)",
				seed, closeErr, failed.Load(), syncs.Load(), failAt)
		}
		got, _, err := replayAll(t, mem.CrashClone(rng), segPath(11), 11)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for _, p := range got {
			id, ok := checkPayload(p)
			if !ok {
				t.Fatalf("seed %d: bad payload", seed)
			}
			delete(acked, id)
		}
		if len(acked) > 0 {
			t.Fatalf("seed %d: %d acknowledged records lost", seed, len(acked))
		}
	}
}

// TestBackpressure checks that Append blocks while MaxPendingBytes are
// pending and that pending bytes stay within the bound plus one record.
func TestBackpressure(t *testing.T) {
	defer goleak.VerifyNone(t)
	const maxPending, payload = 1000, 288 // records of 300 bytes
	mem := newTestFS(t)
	var writes atomic.Int64
	hold := make(chan struct{})
	fs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool {
		if op == vfs.OpWrite && writes.Add(1) == 1 {
			<-hold // stall the first write
		}
		return false
	}}
	w, err := Create(Options{FS: fs, Dir: testDir, MaxPendingBytes: maxPending}, 4)
	if err != nil {
		t.Fatal(err)
	}
	var done atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				id := uint64(g)<<32 | uint64(i)
				if err := w.Append(testPayload(id, payload), i%10 == 9); err != nil {
					t.Error(err)
					return
				}
				done.Add(1)
			}
		})
	}
	stalls := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.mu.stalls
	}
	waitFor(t, "an Append to stall", func() bool { return stalls() > 0 })
	// With the flusher stuck, at most 4 records (1200 bytes) fit.
	if n := done.Load(); n > 4 {
		t.Fatalf("%d appends completed while the flusher was stuck; want at most 4", n)
	}
	close(hold)
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	seen := w.mu.maxPendingSeen
	w.mu.Unlock()
	if seen > maxPending+headerSize+payload-1 {
		t.Fatalf("pending reached %d bytes, bound is %d plus one record", seen, maxPending)
	}
	got, _, err := replayAll(t, mem, segPath(4), 4)
	if err != nil || len(got) != 200 {
		t.Fatalf("replayed %d records, %v; want 200", len(got), err)
	}
}

// TestCrash runs concurrent appends, crashes at a random point and checks
// that replay of the crashed file system returns every acknowledged record,
// only whole records, in an order that is a prefix of the full log.
func TestCrash(t *testing.T) {
	defer goleak.VerifyNone(t)
	seeds := 500
	if testing.Short() {
		seeds = 50
	}
	for seed := range uint64(seeds) {
		crashOnce(t, seed)
	}
}

func crashOnce(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	fs := newTestFS(t)
	opts := Options{FS: fs, Dir: testDir, MaxPendingBytes: 512 + rng.IntN(8192)}
	const num = 21
	var w *Writer
	var err error
	if seed%2 == 1 {
		old, oerr := Create(opts, num-1)
		if oerr != nil {
			t.Fatal(oerr)
		}
		for i := range 20 + rng.IntN(50) {
			id := uint64(1<<40 | i)
			if err := old.Append(testPayload(id, payloadSize(id, 1000)), false); err != nil {
				t.Fatal(err)
			}
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		w, err = CreateRecycled(opts, num, num-1)
	} else {
		w, err = Create(opts, num)
	}
	if err != nil {
		t.Fatal(err)
	}

	writers := 2 + rng.IntN(7)
	perWriter := 5 + rng.IntN(20)
	crashAfter := rng.IntN(writers * perWriter / 2)
	var mu sync.Mutex
	acked := map[uint64]bool{}
	crash := make(chan struct{})
	var crashOnce sync.Once
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range perWriter {
				id := uint64(g)<<32 | uint64(i)
				sync := (id*7+seed)%5 != 0
				if err := w.Append(testPayload(id, payloadSize(id, 700)), sync); err != nil {
					t.Error(err)
					return
				}
				if sync {
					mu.Lock()
					acked[id] = true
					if len(acked) > crashAfter {
						crashOnce.Do(func() { close(crash) })
					}
					mu.Unlock()
				}
			}
		})
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-crash:
	case <-allDone:
	}
	mu.Lock()
	mustHave := make(map[uint64]bool, len(acked))
	for id := range acked {
		mustHave[id] = true
	}
	mu.Unlock()
	crashed := fs.CrashClone(rng)
	<-allDone
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	full, _, err := replayAll(t, fs, segPath(num), num)
	if err != nil {
		t.Fatalf("seed %d: replay without crash: %v", seed, err)
	}
	got, res, err := replayAll(t, crashed, segPath(num), num)
	if err != nil {
		t.Fatalf("seed %d: replay after crash: %v", seed, err)
	}
	if len(got) > len(full) {
		t.Fatalf("seed %d: %d records after crash, %d without", seed, len(got), len(full))
	}
	for i, p := range got {
		if !bytes.Equal(p, full[i]) {
			t.Fatalf("seed %d: record %d after crash is not record %d of the log", seed, i, i)
		}
		id, ok := checkPayload(p)
		if !ok || id>>40 != 0 {
			t.Fatalf("seed %d: record %d is not a whole record of this segment", seed, i)
		}
		delete(mustHave, id)
	}
	if len(mustHave) > 0 {
		t.Fatalf("seed %d: %d acknowledged records lost (%d replayed)", seed, len(mustHave), len(got))
	}
	if res.TornTail {
		if sz := fileSize(t, crashed, segPath(num)); sz != res.ValidSize {
			t.Fatalf("seed %d: torn tail left %d bytes, want %d", seed, sz, res.ValidSize)
		}
	}
	// Replay is idempotent.
	again, res2, err := replayAll(t, crashed, segPath(num), num)
	if err != nil || len(again) != len(got) || res2.TornTail || res2.ValidSize != res.ValidSize {
		t.Fatalf("seed %d: second replay: %d records, %+v, %v; first %d, %+v",
			seed, len(again), res2, err, len(got), res)
	}
}

// TestOnSync: OnSync sees every sync, and only syncs.
func TestOnSync(t *testing.T) {
	defer goleak.VerifyNone(t)
	const slow = 2 * time.Millisecond
	// Every fdatasync takes at least slow; OnSync must time it.
	fs := &vfs.ErrorFS{FS: vfs.Default, Inject: func(op vfs.Op, _ string) bool {
		if op == vfs.OpSync {
			time.Sleep(slow)
		}
		return false
	}}
	var calls atomic.Int64
	w, err := Create(Options{FS: fs, Dir: t.TempDir(), PreallocateSize: 1 << 20,
		OnSync: func(d time.Duration) {
			if d < slow {
				t.Errorf("OnSync reported %v for a sync that took at least %v", d, slow)
			}
			calls.Add(1)
		}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := w.Append([]byte("record"), i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// NB: Close syncs too.
	if st := w.Stats(); st.Syncs < 10 || uint64(calls.Load()) != st.Syncs {
		t.Fatalf("OnSync called %d times for %d syncs (10 synced appends)", calls.Load(), st.Syncs)
	}
}
