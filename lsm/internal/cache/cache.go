// Package cache implements the engine's block cache: a sharded LRU cache of
// immutable table blocks, bounded by the total number of bytes it holds.
//
// Blocks are keyed by (file number, offset of the block in the file). The
// cache never copies: Set takes ownership of the block, and Get returns the
// same slice to every caller, so blocks must never be modified once they are
// inserted. When a table is deleted, EvictFile drops its blocks.
//
// Typical use by a table reader:
//
//	if b, ok := c.Get(fileNum, off); ok {
//		return b
//	}
//	b := readAndVerifyBlock(off)
//	c.Set(fileNum, off, b)
//	return b
//
// A nil *Cache and a cache of capacity 0 are valid and cache nothing.
package cache

import (
	"sync"
	"sync/atomic"
)

// maxShards bounds the number of shards; more shards mean less contention
// but a coarser approximation of global LRU order.
const maxShards = 16

// minShardCapacity is the smallest capacity a shard is given when choosing
// the shard count, so that each shard can hold a useful number of blocks.
const minShardCapacity = 1 << 20

// Cache is a sharded LRU cache of immutable blocks, bounded by bytes. It is
// safe for concurrent use. The zero value is not usable; call New.
//
// The charge of a block is len(block); the bookkeeping overhead (about 100
// bytes per block) is not charged. INVARIANT: the sum of the charges of the
// cached blocks never exceeds the capacity.
type Cache struct {
	capacity int64
	shards   []shard
	mask     uint64

	hits   atomic.Uint64
	misses atomic.Uint64
	size   atomic.Int64
	count  atomic.Int64
}

// Stats is a snapshot of the counters of a Cache.
type Stats struct {
	// Hits is the number of Get calls that found their block.
	Hits uint64
	// Misses is the number of Get calls that did not find their block.
	Misses uint64
	// Size is the number of bytes of the cached blocks.
	Size int64
	// Count is the number of cached blocks.
	Count int64
	// Capacity is the capacity of the cache in bytes.
	Capacity int64
}

type key struct {
	fileNum uint64
	offset  uint64
}

// entry is a cached block. It is on two circular doubly linked lists of its
// shard: the LRU list (prev/next) and the list of its file's blocks
// (filePrev/fileNext).
type entry struct {
	key                key
	block              []byte
	prev, next         *entry
	filePrev, fileNext *entry
}

// shard is one LRU partition of the cache.
type shard struct {
	// mu protects all the fields below; every method of shard that touches
	// them is called with mu held (methods ending in Locked).
	mu       sync.Mutex
	capacity int64
	size     int64
	entries  map[key]*entry
	// files maps a file number to one of its entries (the head of its
	// circular file list).
	files map[uint64]*entry
	// lru is the sentinel of the LRU list: lru.next is the most recently
	// used entry and lru.prev the least recently used.
	lru entry
	_   [64]byte // avoid false sharing between shards
}

// New returns a cache that holds at most capacityBytes bytes of blocks. A
// capacity of 0 (or less) disables the cache: Set drops every block and Get
// always misses.
func New(capacityBytes int64) *Cache {
	if capacityBytes < 0 {
		capacityBytes = 0
	}
	// Use as many shards as possible (a power of two, at most maxShards)
	// while giving each at least minShardCapacity bytes. Small caches get a
	// single shard, which is an exact LRU.
	n := 1
	for n < maxShards && capacityBytes/int64(2*n) >= minShardCapacity {
		n *= 2
	}
	c := &Cache{
		capacity: capacityBytes,
		shards:   make([]shard, n),
		mask:     uint64(n - 1),
	}
	per := capacityBytes / int64(n)
	for i := range c.shards {
		s := &c.shards[i]
		s.capacity = per
		s.entries = make(map[key]*entry)
		s.files = make(map[uint64]*entry)
		s.lru.next = &s.lru
		s.lru.prev = &s.lru
	}
	return c
}

func (c *Cache) shard(k key) *shard {
	// Mix both halves so that the blocks of one file spread over shards.
	h := k.fileNum*0x9E3779B97F4A7C15 ^ k.offset*0xC2B2AE3D27D4EB4F
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 32
	return &c.shards[h&c.mask]
}

// Get returns the block of file fileNum at offset off, if it is cached, and
// marks it most recently used. The returned slice is shared with other
// callers and must not be modified; it stays valid after eviction.
func (c *Cache) Get(fileNum, off uint64) ([]byte, bool) {
	if c == nil || c.capacity == 0 {
		return nil, false
	}
	k := key{fileNum, off}
	s := c.shard(k)
	s.mu.Lock()
	e, ok := s.entries[k]
	if ok {
		s.moveToFrontLocked(e)
	}
	s.mu.Unlock()
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	c.hits.Add(1)
	return e.block, true
}

// Set inserts the block of file fileNum at offset off, replacing any cached
// block with the same key, and evicts least recently used blocks of the
// shard to stay within capacity. The cache takes ownership of block: the
// caller must not modify it afterwards. A block larger than a shard's
// capacity is not cached.
func (c *Cache) Set(fileNum, off uint64, block []byte) {
	if c == nil || c.capacity == 0 {
		return
	}
	k := key{fileNum, off}
	s := c.shard(k)
	charge := int64(len(block))
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.entries[k]; ok {
		c.removeLocked(s, old)
	}
	if charge > s.capacity {
		return
	}
	for s.size+charge > s.capacity {
		c.removeLocked(s, s.lru.prev)
	}
	e := &entry{key: k, block: block}
	s.entries[k] = e
	// Push at the front of the LRU list.
	e.prev = &s.lru
	e.next = s.lru.next
	e.next.prev = e
	s.lru.next = e
	// Link into the file's list.
	if head, ok := s.files[fileNum]; ok {
		e.fileNext = head
		e.filePrev = head.filePrev
		e.filePrev.fileNext = e
		head.filePrev = e
	} else {
		e.fileNext = e
		e.filePrev = e
		s.files[fileNum] = e
	}
	s.size += charge
	c.size.Add(charge)
	c.count.Add(1)
}

// EvictFile drops every cached block of file fileNum. Call it when the
// table is deleted so that its blocks do not linger until evicted by LRU.
func (c *Cache) EvictFile(fileNum uint64) {
	if c == nil || c.capacity == 0 {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for {
			head, ok := s.files[fileNum]
			if !ok {
				break
			}
			c.removeLocked(s, head)
		}
		s.mu.Unlock()
	}
}

// Stats returns a snapshot of the cache's counters. The fields are read
// independently, so a snapshot taken under concurrent use may be slightly
// inconsistent.
func (c *Cache) Stats() Stats {
	if c == nil {
		return Stats{}
	}
	return Stats{
		Hits:     c.hits.Load(),
		Misses:   c.misses.Load(),
		Size:     c.size.Load(),
		Count:    c.count.Load(),
		Capacity: c.capacity,
	}
}

// Capacity returns the capacity of the cache in bytes.
func (c *Cache) Capacity() int64 {
	if c == nil {
		return 0
	}
	return c.capacity
}

func (s *shard) moveToFrontLocked(e *entry) {
	if s.lru.next == e {
		return
	}
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev = &s.lru
	e.next = s.lru.next
	e.next.prev = e
	s.lru.next = e
}

// removeLocked unlinks e from its shard. REQUIRES: s.mu is held and e is
// cached in s.
func (c *Cache) removeLocked(s *shard, e *entry) {
	delete(s.entries, e.key)
	e.prev.next = e.next
	e.next.prev = e.prev
	if e.fileNext == e {
		delete(s.files, e.key.fileNum)
	} else {
		e.filePrev.fileNext = e.fileNext
		e.fileNext.filePrev = e.filePrev
		if s.files[e.key.fileNum] == e {
			s.files[e.key.fileNum] = e.fileNext
		}
	}
	e.prev, e.next, e.filePrev, e.fileNext = nil, nil, nil, nil
	charge := int64(len(e.block))
	s.size -= charge
	c.size.Add(-charge)
	c.count.Add(-1)
}

// numShardsForTesting returns the number of shards.
func (c *Cache) numShardsForTesting() int { return len(c.shards) }
