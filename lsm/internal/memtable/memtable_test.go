package memtable

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

// TestModel applies random versioned mutations in random order and checks
// the memtable against a map that keeps the highest version per key.
func TestModel(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		m := New()
		model := map[string]base.Entry{}
		for i := 0; i < 2000; i++ {
			e := base.Entry{
				Key:     []byte(fmt.Sprintf("k%03d", rng.IntN(300))),
				Version: rng.Uint64N(1000) + 1,
				Kind:    base.Kind(rng.IntN(2)),
			}
			if e.Kind == base.KindSet {
				e.Value = []byte(fmt.Sprintf("v%d", e.Version))
			}
			m.Add(e)
			if old, ok := model[string(e.Key)]; !ok || e.Version > old.Version {
				model[string(e.Key)] = e
			}
		}
		keys := make([]string, 0, len(model))
		for k, want := range model {
			keys = append(keys, k)
			got, ok := m.Get([]byte(k))
			if !ok || got.Version != want.Version || got.Kind != want.Kind || !bytes.Equal(got.Value, want.Value) {
				t.Fatalf("seed %d: Get(%s) = %+v, %v; want %+v", seed, k, got, ok, want)
			}
		}
		sort.Strings(keys)
		it := m.NewIter()
		i := 0
		for ok := it.First(); ok; ok = it.Next() {
			if i >= len(keys) || string(it.Entry().Key) != keys[i] {
				t.Fatalf("seed %d: iteration position %d: got %q", seed, i, it.Entry().Key)
			}
			i++
		}
		if i != len(keys) || int(m.Len()) != len(keys) {
			t.Fatalf("seed %d: iterated %d, Len %d, want %d", seed, i, m.Len(), len(keys))
		}
		if _, ok := m.Get([]byte("absent")); ok {
			t.Fatal("found an absent key")
		}
		if it.SeekGE([]byte("k150")); string(it.Entry().Key) < "k150" {
			t.Fatalf("SeekGE landed before its key: %q", it.Entry().Key)
		}
	}
}

// TestConcurrentReaders runs readers against a writer under the race
// detector; a reader must always see a key it saw once, with a version that
// never goes down.
func TestConcurrentReaders(t *testing.T) {
	m := New()
	var wg sync.WaitGroup
	done := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := map[string]uint64{}
			for {
				select {
				case <-done:
					return
				default:
				}
				it := m.NewIter()
				prev := []byte(nil)
				for ok := it.First(); ok; ok = it.Next() {
					e := it.Entry()
					if prev != nil && bytes.Compare(prev, e.Key) >= 0 {
						t.Errorf("keys out of order: %q then %q", prev, e.Key)
						return
					}
					prev = e.Key
					if e.Version < last[string(e.Key)] {
						t.Errorf("version of %q went down", e.Key)
						return
					}
					last[string(e.Key)] = e.Version
				}
			}
		}()
	}
	for i := 0; i < 20000; i++ {
		m.Add(base.Entry{Key: []byte(fmt.Sprintf("k%04d", i%500)), Version: uint64(i + 1), Kind: base.KindSet, Value: []byte("v")})
	}
	close(done)
	wg.Wait()
}

func BenchmarkAdd(b *testing.B) {
	// go test -run=^$ -bench=BenchmarkAdd -benchmem ./lsm/internal/memtable/
	m := New()
	val := make([]byte, 100)
	keys := make([][]byte, 1<<16)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("key-%016x", rand.Uint64()))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.Add(base.Entry{Key: keys[i&(len(keys)-1)], Version: uint64(i), Kind: base.KindSet, Value: val})
	}
}

// TestAddBatchOwned checks that AddBatchOwned keeps the entries' slices
// instead of copying them, and that Size counts the whole buffer they
// point into for as long as the memtable lives.
func TestAddBatchOwned(t *testing.T) {
	m := New()
	buf := []byte("k1v1k2v2-and-the-rest-of-a-batch")
	es := []base.Entry{
		{Key: buf[0:2], Version: 1, Kind: base.KindSet, Value: buf[2:4]},
		{Key: buf[4:6], Version: 2, Kind: base.KindSet, Value: buf[6:8]},
	}
	m.AddBatchOwned(es, nil, buf)
	e, ok := m.Get([]byte("k1"))
	if !ok || string(e.Value) != "v1" || &e.Value[0] != &buf[2] || &e.Key[0] != &buf[0] {
		t.Fatalf("k1 = %+v, %v: not the buffer's bytes", e, ok)
	}
	size := m.Size()
	if size < int64(len(buf)) {
		t.Fatalf("Size %d does not count the %d-byte buffer", size, len(buf))
	}
	// A newer version of k1 (copied) replaces it, but the buffer stays
	// alive through k2: Size does not drop.
	m.Add(base.Entry{Key: []byte("k1"), Version: 3, Kind: base.KindSet, Value: []byte("v")})
	if m.Size() < size {
		t.Fatalf("Size fell from %d to %d after replacing an entry of a kept buffer", size, m.Size())
	}
	if e, _ := m.Get([]byte("k1")); string(e.Value) != "v" {
		t.Fatalf("k1 = %q after the newer version", e.Value)
	}
	// Add copies: changing the caller's bytes afterwards changes nothing.
	val := []byte("copied")
	m.Add(base.Entry{Key: []byte("k9"), Version: 4, Kind: base.KindSet, Value: val})
	val[0] = 'X'
	if e, _ := m.Get([]byte("k9")); string(e.Value) != "copied" {
		t.Fatalf("Add kept the caller's slice: %q", e.Value)
	}
}
