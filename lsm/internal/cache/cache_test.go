package cache

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

func block(n int, fill byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = fill
	}
	return b
}

func TestGetSet(t *testing.T) {
	c := New(1 << 10)
	if _, ok := c.Get(1, 0); ok {
		t.Fatal("empty cache hit")
	}
	c.Set(1, 0, block(10, 'a'))
	c.Set(1, 10, block(10, 'b'))
	c.Set(2, 0, block(10, 'c'))
	for _, tc := range []struct {
		file, off uint64
		want      byte
	}{{1, 0, 'a'}, {1, 10, 'b'}, {2, 0, 'c'}} {
		b, ok := c.Get(tc.file, tc.off)
		if !ok || len(b) != 10 || b[0] != tc.want {
			t.Fatalf("Get(%d,%d) = %q, %v", tc.file, tc.off, b, ok)
		}
	}
	if _, ok := c.Get(2, 10); ok {
		t.Fatal("unexpected hit")
	}
	st := c.Stats()
	if st.Hits != 3 || st.Misses != 2 || st.Size != 30 || st.Count != 3 || st.Capacity != 1<<10 {
		t.Fatalf("stats = %+v", st)
	}
	// Replacing a block recharges it.
	c.Set(1, 0, block(20, 'z'))
	if b, _ := c.Get(1, 0); b[0] != 'z' {
		t.Fatal("replacement not visible")
	}
	if st := c.Stats(); st.Size != 40 || st.Count != 3 {
		t.Fatalf("stats after replace = %+v", st)
	}
}

func TestLRUOrder(t *testing.T) {
	c := New(100) // one shard: exact LRU
	if c.numShardsForTesting() != 1 {
		t.Fatalf("shards = %d", c.numShardsForTesting())
	}
	for i := uint64(0); i < 5; i++ {
		c.Set(1, i, block(20, byte(i)))
	}
	// Touch 0 and 2 so that 1 is the least recently used, then 3.
	c.Get(1, 0)
	c.Get(1, 2)
	c.Set(1, 5, block(20, 5))
	if _, ok := c.Get(1, 1); ok {
		t.Fatal("block 1 should have been evicted first")
	}
	for _, off := range []uint64{0, 2, 3, 4, 5} {
		if _, ok := c.Get(1, off); !ok {
			t.Fatalf("block %d evicted", off)
		}
	}
	// Now the LRU order is 0,2,3,4,5 (0 oldest). A 40-byte block evicts 0
	// and 2.
	c.Set(1, 6, block(40, 6))
	for off, want := range map[uint64]bool{0: false, 2: false, 3: true, 4: true, 5: true, 6: true} {
		if _, ok := c.Get(1, off); ok != want {
			t.Fatalf("block %d cached = %v, want %v", off, ok, want)
		}
	}
	if st := c.Stats(); st.Size != 100 {
		t.Fatalf("size = %d", st.Size)
	}
}

func TestTooLargeAndDisabled(t *testing.T) {
	c := New(100)
	c.Set(1, 0, block(101, 1))
	if _, ok := c.Get(1, 0); ok {
		t.Fatal("oversized block cached")
	}
	if c.Stats().Size != 0 {
		t.Fatal("size not zero")
	}
	for _, c := range []*Cache{New(0), nil} {
		c.Set(1, 0, block(1, 1))
		if _, ok := c.Get(1, 0); ok {
			t.Fatal("disabled cache hit")
		}
		c.EvictFile(1)
		_ = c.Stats()
	}
}

func TestEvictFile(t *testing.T) {
	c := New(64 << 20)
	if c.numShardsForTesting() < 2 {
		t.Fatalf("want several shards, got %d", c.numShardsForTesting())
	}
	for f := uint64(1); f <= 3; f++ {
		for off := uint64(0); off < 100; off++ {
			c.Set(f, off*4096, block(100, byte(f)))
		}
	}
	c.EvictFile(2)
	for f := uint64(1); f <= 3; f++ {
		for off := uint64(0); off < 100; off++ {
			_, ok := c.Get(f, off*4096)
			if ok != (f != 2) {
				t.Fatalf("file %d block %d cached = %v", f, off, ok)
			}
		}
	}
	if st := c.Stats(); st.Size != 200*100 || st.Count != 200 {
		t.Fatalf("stats = %+v", st)
	}
	// Evicting a file with some blocks removed by LRU or replacement.
	c.Set(1, 0, block(50, 9))
	c.EvictFile(1)
	c.EvictFile(3)
	c.EvictFile(4)
	if st := c.Stats(); st.Size != 0 || st.Count != 0 {
		t.Fatalf("stats = %+v", st)
	}
	// The cache still works after emptying.
	c.Set(1, 0, block(10, 1))
	if _, ok := c.Get(1, 0); !ok {
		t.Fatal("miss after refill")
	}
}

// TestCapacityNeverExceeded checks the size bound and the internal
// consistency of the lists under random operations.
func TestCapacityNeverExceeded(t *testing.T) {
	for _, capacity := range []int64{1000, 5 << 20} {
		c := New(capacity)
		rng := rand.New(rand.NewPCG(1, uint64(capacity)))
		for i := 0; i < 20000; i++ {
			f := rng.Uint64N(8)
			off := rng.Uint64N(64)
			switch r := rng.IntN(100); {
			case r < 60:
				c.Set(f, off, block(rng.IntN(int(min(capacity/10, 32<<10))), 0))
			case r < 98:
				c.Get(f, off)
			default:
				c.EvictFile(f)
			}
			if sz := c.Stats().Size; sz > capacity || sz < 0 {
				t.Fatalf("size %d exceeds capacity %d", sz, capacity)
			}
		}
		checkConsistent(t, c)
	}
}

func checkConsistent(t *testing.T, c *Cache) {
	t.Helper()
	var total, count int64
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		var sz int64
		n := 0
		for e := s.lru.next; e != &s.lru; e = e.next {
			sz += int64(len(e.block))
			n++
			if s.entries[e.key] != e {
				t.Fatalf("entry %v on LRU list but not in map", e.key)
			}
		}
		if n != len(s.entries) || sz != s.size || s.size > s.capacity {
			t.Fatalf("shard %d: n=%d map=%d size=%d/%d cap=%d", i, n, len(s.entries), sz, s.size, s.capacity)
		}
		fileN := 0
		for f, head := range s.files {
			e := head
			for {
				if e.key.fileNum != f {
					t.Fatalf("entry of file %d on list of file %d", e.key.fileNum, f)
				}
				fileN++
				e = e.fileNext
				if e == head {
					break
				}
			}
		}
		if fileN != n {
			t.Fatalf("shard %d: file lists hold %d entries, LRU %d", i, fileN, n)
		}
		total += sz
		count += int64(n)
		s.mu.Unlock()
	}
	if st := c.Stats(); st.Size != total || st.Count != count {
		t.Fatalf("stats %+v, counted size %d count %d", st, total, count)
	}
}

func TestConcurrent(t *testing.T) {
	const capacity = 4 << 20
	c := New(capacity)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < 2000; i++ {
				f, off := rng.Uint64N(4), rng.Uint64N(128)
				switch r := rng.IntN(100); {
				case r < 40:
					c.Set(f, off, block(1+rng.IntN(16<<10), byte(f)))
				case r < 99:
					if b, ok := c.Get(f, off); ok && len(b) > 0 && b[0] != byte(f) {
						panic(fmt.Sprintf("wrong block for file %d", f))
					}
				default:
					c.EvictFile(f)
				}
				if sz := c.Stats().Size; sz > capacity {
					panic(fmt.Sprintf("size %d > capacity", sz))
				}
			}
		}()
	}
	wg.Wait()
	checkConsistent(t, c)
	if st := c.Stats(); st.Hits == 0 || st.Misses == 0 {
		t.Fatalf("stats = %+v", st)
	}
}

// BenchmarkGet measures a cache hit.
//
//	go test -run=- -bench=. -count=10 ./lsm/internal/cache/
func BenchmarkGet(b *testing.B) {
	c := New(64 << 20)
	for i := uint64(0); i < 1000; i++ {
		c.Set(1, i*4096, make([]byte, 4096))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := uint64(0)
		for pb.Next() {
			c.Get(1, (i%1000)*4096)
			i++
		}
	})
}
