// Package memtable is the engine's in-memory write buffer: a skiplist that
// holds, for each key, the entry with the highest version applied so far.
//
// Writers are serialized by an internal mutex; readers never lock and may
// run concurrently with a writer. A memtable only grows: an entry is never
// removed, only replaced by a higher version of its key.
package memtable

import (
	"bytes"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

const maxHeight = 20

// nodeOverhead approximates the bytes a node costs beyond its key and value.
const nodeOverhead = 64

type value struct {
	version uint64
	kind    base.Kind
	value   []byte
	loc     Loc
	shared  bool // value points into a buffer counted whole (AddBatchOwned)
}

// Loc locates a value in a WAL segment: the offset of the value's bytes,
// which are followed by their CRC32C. The zero Loc means "not located".
type Loc struct {
	FileNum base.FileNum
	Offset  uint64
}

type node struct {
	key  []byte
	val  atomic.Pointer[value]
	next []atomic.Pointer[node]
}

// Memtable is a skiplist keyed by user key.
type Memtable struct {
	head   *node
	height atomic.Int32
	size   atomic.Int64
	count  atomic.Int64
	minVer atomic.Uint64
	maxVer atomic.Uint64

	mu struct {
		sync.Mutex // serializes writers
		rng        *rand.Rand
	}
}

// New returns an empty memtable.
func New() *Memtable {
	m := &Memtable{head: &node{next: make([]atomic.Pointer[node], maxHeight)}}
	m.height.Store(1)
	m.minVer.Store(math.MaxUint64)
	m.mu.rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	return m
}

// Size returns the approximate memory the memtable holds, in bytes.
func (m *Memtable) Size() int64 { return m.size.Load() }

// Len returns the number of distinct keys.
func (m *Memtable) Len() int64 { return m.count.Load() }

// Empty reports whether the memtable holds nothing.
func (m *Memtable) Empty() bool { return m.count.Load() == 0 }

// VersionRange returns the smallest and largest version applied. It returns
// (MaxUint64, 0) for an empty memtable.
func (m *Memtable) VersionRange() (lo, hi uint64) { return m.minVer.Load(), m.maxVer.Load() }

func (m *Memtable) randomHeight() int {
	h := 1
	for h < maxHeight && m.mu.rng.Uint32()&3 == 0 { // p = 1/4
		h++
	}
	return h
}

// findGE returns the first node with key >= key, filling prev (if not nil)
// with the last node before it at each level.
func (m *Memtable) findGE(key []byte, prev *[maxHeight]*node) *node {
	x := m.head
	for level := int(m.height.Load()) - 1; level >= 0; level-- {
		for {
			next := x.next[level].Load()
			if next == nil || bytes.Compare(next.key, key) >= 0 {
				break
			}
			x = next
		}
		if prev != nil {
			prev[level] = x
		}
	}
	return x.next[0].Load()
}

// Add applies e: it becomes the key's entry unless the memtable already holds
// an entry of the key with a version at least as high. Add copies e's slices.
func (m *Memtable) Add(e base.Entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.addLocked(e, Loc{}, false)
}

// AddBatch applies several entries under one lock acquisition. locs, if not
// nil, gives for each entry where its value lies in the WAL.
func (m *Memtable) AddBatch(es []base.Entry, locs []Loc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.addBatchLocked(es, locs, false)
}

// AddBatchOwned is AddBatch for entries whose slices the memtable may keep:
// they point into buf, which nobody modifies again. It does not copy them,
// and it counts all of buf in Size, as long as the memtable lives: an entry
// replaced later still keeps buf alive.
func (m *Memtable) AddBatchOwned(es []base.Entry, locs []Loc, buf []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.addBatchLocked(es, locs, true)
	m.size.Add(int64(len(buf)))
}

func (m *Memtable) addBatchLocked(es []base.Entry, locs []Loc, owned bool) {
	for i := range es {
		var loc Loc
		if locs != nil {
			loc = locs[i]
		}
		m.addLocked(es[i], loc, owned)
	}
}

// addLocked adds e; owned says that e's slices may be kept (and that the
// caller counts their bytes).
func (m *Memtable) addLocked(e base.Entry, loc Loc, owned bool) {
	v := &value{version: e.Version, kind: e.Kind, loc: loc, shared: owned}
	if e.Kind == base.KindSet {
		if owned {
			v.value = e.Value
		} else {
			v.value = append(make([]byte, 0, len(e.Value)), e.Value...)
		}
	}
	if e.Version < m.minVer.Load() {
		m.minVer.Store(e.Version)
	}
	if e.Version > m.maxVer.Load() {
		m.maxVer.Store(e.Version)
	}
	var prev [maxHeight]*node
	n := m.findGE(e.Key, &prev)
	if n != nil && bytes.Equal(n.key, e.Key) {
		old := n.val.Load()
		if e.Version > old.version {
			n.val.Store(v)
			// NB: bytes of a kept buffer stay counted (and alive) after
			// their entry is replaced.
			var delta int64
			if !owned {
				delta += int64(len(v.value))
			}
			if !old.shared {
				delta -= int64(len(old.value))
			}
			m.size.Add(delta)
		}
		return
	}
	h := m.randomHeight()
	if cur := int(m.height.Load()); h > cur {
		for level := cur; level < h; level++ {
			prev[level] = m.head
		}
		m.height.Store(int32(h))
	}
	key := e.Key
	if !owned {
		key = bytes.Clone(key)
	}
	n = &node{key: key, next: make([]atomic.Pointer[node], h)}
	n.val.Store(v)
	// NB: link bottom-up so that a concurrent reader that sees the node at
	// a level can always continue from it at lower levels.
	for level := 0; level < h; level++ {
		n.next[level].Store(prev[level].next[level].Load())
		prev[level].next[level].Store(n)
	}
	if owned {
		m.size.Add(nodeOverhead + int64(h)*8)
	} else {
		m.size.Add(int64(len(e.Key)+len(v.value)) + nodeOverhead + int64(h)*8)
	}
	m.count.Add(1)
}

// Get returns the key's entry. The returned slices must not be modified.
func (m *Memtable) Get(key []byte) (base.Entry, bool) {
	n := m.findGE(key, nil)
	if n == nil || !bytes.Equal(n.key, key) {
		return base.Entry{}, false
	}
	v := n.val.Load()
	return base.Entry{Key: n.key, Version: v.version, Kind: v.kind, Value: v.value}, true
}

// NewIter returns an iterator over the memtable. It sees entries added
// after its creation at positions it has not passed yet.
func (m *Memtable) NewIter() *Iter { return &Iter{m: m} }

// Iter iterates over a memtable.
type Iter = iter

type iter struct {
	m   *Memtable
	cur *node
}

var _ base.InternalIterator = (*iter)(nil)

// EntryLoc returns the current entry and where its value lies in the WAL
// (the zero Loc if unknown), from one consistent read.
func (it *iter) EntryLoc() (base.Entry, Loc) {
	v := it.cur.val.Load()
	return base.Entry{Key: it.cur.key, Version: v.version, Kind: v.kind, Value: v.value}, v.loc
}

func (it *iter) First() bool { it.cur = it.m.head.next[0].Load(); return it.cur != nil }

func (it *iter) SeekGE(key []byte) bool { it.cur = it.m.findGE(key, nil); return it.cur != nil }

func (it *iter) Next() bool {
	if it.cur != nil {
		it.cur = it.cur.next[0].Load()
	}
	return it.cur != nil
}

func (it *iter) Entry() base.Entry {
	v := it.cur.val.Load()
	return base.Entry{Key: it.cur.key, Version: v.version, Kind: v.kind, Value: v.value}
}

func (it *iter) Error() error { return nil }
func (it *iter) Close() error { it.cur = nil; return nil }
