package sstable

import (
	"context"
	"fmt"
	"testing"

	"github.com/tierkv/tierkv/lsm/internal/cache"
)

// Benchmarks of the table hot paths. Compare runs with benchstat:
//
//	go test -run=- -bench=. -count=10 ./lsm/internal/sstable/ > new.txt
//	benchstat old.txt new.txt

const benchEntries = 100000

func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	es := sequentialEntries(benchEntries, 100)
	for _, comp := range []Compression{NoCompression, S2Compression, ZstdCompression} {
		data, _ := buildTable(b, es, WriterOptions{BloomBitsPerKey: 10, Compression: comp})
		for _, cached := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/cached=%v", comp, cached), func(b *testing.B) {
				var c *cache.Cache
				if cached {
					c = cache.New(1 << 30)
				}
				r, _ := openTable(b, data, ReaderOptions{Cache: c, FileNum: 1})
				defer r.Close()
				if cached {
					for _, e := range es {
						r.Get(ctx, e.Key)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					if _, ok, err := r.Get(ctx, es[(i*7919)%len(es)].Key); !ok || err != nil {
						b.Fatal(ok, err)
					}
				}
			})
		}
	}
}

func BenchmarkGetAbsent(b *testing.B) {
	ctx := context.Background()
	es := sequentialEntries(benchEntries, 100)
	data, _ := buildTable(b, es, WriterOptions{BloomBitsPerKey: 10})
	r, _ := openTable(b, data, ReaderOptions{Cache: cache.New(1 << 30), FileNum: 1})
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key%08d", (i*7919%benchEntries)*2+1)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Get(ctx, keys[i%len(keys)])
	}
}

func BenchmarkIter(b *testing.B) {
	ctx := context.Background()
	es := sequentialEntries(benchEntries, 100)
	data, _ := buildTable(b, es, WriterOptions{Compression: S2Compression})
	for _, mode := range []string{"cached", "uncached", "compaction"} {
		b.Run(mode, func(b *testing.B) {
			var c *cache.Cache
			if mode == "cached" {
				c = cache.New(1 << 30)
			}
			r, _ := openTable(b, data, ReaderOptions{Cache: c, FileNum: 1})
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				it := r.NewIter(ctx)
				if mode == "compaction" {
					it = r.NewCompactionIter(ctx)
				}
				n := 0
				for ok := it.First(); ok; ok = it.Next() {
					n++
				}
				if err := it.Close(); err != nil || n != len(es) {
					b.Fatal(n, err)
				}
			}
		})
	}
}

func BenchmarkWrite(b *testing.B) {
	es := sequentialEntries(benchEntries, 100)
	for _, comp := range []Compression{NoCompression, S2Compression, ZstdCompression} {
		b.Run(comp.String(), func(b *testing.B) {
			b.ReportAllocs()
			var size int64
			for b.Loop() {
				var mw memWritable
				w := NewWriter(&mw, WriterOptions{BloomBitsPerKey: 10, Compression: comp})
				for _, e := range es {
					if err := w.Add(e); err != nil {
						b.Fatal(err)
					}
				}
				p, err := w.Close()
				if err != nil {
					b.Fatal(err)
				}
				size = int64(p.FileSize)
			}
			b.SetBytes(size)
		})
	}
}
