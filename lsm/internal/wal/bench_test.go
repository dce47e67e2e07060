package wal

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// BenchmarkAppend measures Append on the OS file system (the test's temp
// directory) by payload size, sync mode, number of concurrent writers and,
// for synced appends, whether segments are new files or recycled ones.
// ns/op is the wall time per append across all writers; groupsize is the
// mean number of records per fdatasync. Segments rotate every 64 MiB. Run
// it with
//
//	go test -run='^$' -bench=BenchmarkAppend -count=10 ./lsm/internal/wal/ | tee new.txt
//	benchstat old.txt new.txt
//
// Set TMPDIR to put the segments on the disk under test.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{100, 10 << 10} {
		for _, doSync := range []bool{false, true} {
			for _, writers := range []int{1, 16} {
				for _, recycle := range []bool{false, true} {
					if recycle && !doSync {
						continue // recycling matters for fdatasync only
					}
					name := fmt.Sprintf("size=%s/sync=%t/writers=%d", byteSize(size), doSync, writers)
					if doSync {
						name += fmt.Sprintf("/recycle=%t", recycle)
					}
					b.Run(name, func(b *testing.B) { benchmarkAppend(b, size, doSync, writers, recycle) })
				}
			}
		}
	}
}

func byteSize(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func benchmarkAppend(b *testing.B, size int, doSync bool, writers int, recycle bool) {
	const segmentSize = 64 << 20
	opts := Options{FS: vfs.Default, Dir: b.TempDir(), PreallocateSize: segmentSize}
	num := base.FileNum(1)
	// next returns a Writer for segment num+1, recycling segment num or
	// removing it.
	next := func() (*Writer, error) {
		num++
		if recycle {
			return CreateRecycled(opts, num, num-1)
		}
		if err := opts.FS.Remove(opts.FS.PathJoin(opts.Dir, SegmentName(num-1))); err != nil {
			return nil, err
		}
		return Create(opts, num)
	}
	// Start from an obsolete segment that was written in full, as the DB
	// does in steady state.
	w, err := Create(opts, num)
	if err != nil {
		b.Fatal(err)
	}
	if recycle {
		zeros := make([]byte, 1<<20)
		for range segmentSize / len(zeros) {
			if err := w.Append(zeros[:len(zeros)-headerSize], false); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	if w, err = next(); err != nil {
		b.Fatal(err)
	}

	var syncs, records uint64
	// rotMu is held shared by appenders and exclusively for rotation.
	var rotMu sync.RWMutex
	rotate := func() {
		rotMu.Lock()
		defer rotMu.Unlock()
		if w.Size() < segmentSize {
			return
		}
		if err := w.Close(); err != nil {
			b.Error(err)
			return
		}
		st := w.Stats()
		syncs, records = syncs+st.Syncs, records+st.Records
		if w, err = next(); err != nil {
			b.Error(err)
		}
	}

	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	var ops atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for ops.Add(1) <= int64(b.N) {
				rotMu.RLock()
				err := w.Append(payload, doSync)
				full := w.Size() >= segmentSize
				rotMu.RUnlock()
				if err != nil {
					b.Error(err)
					return
				}
				if full {
					rotate()
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	st := w.Stats()
	syncs, records = syncs+st.Syncs, records+st.Records
	if doSync && syncs > 0 {
		b.ReportMetric(float64(records)/float64(syncs), "groupsize")
	}
}
