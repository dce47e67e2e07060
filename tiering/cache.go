package tiering

import (
	"container/list"
	"fmt"
	"sync"

	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// diskCache is a bounded LRU cache of fixed-size, aligned chunks of remote
// objects, kept as files in one directory (<dbdir>/tiercache). Its index
// lives in memory; Open empties the directory, so nothing read after a
// crash can be torn (chunk files are not synced). Corrupt bytes in a chunk
// are caught by the engine's block checksums.
type diskCache struct {
	fs    vfs.FS
	dir   string
	limit int64
	// mu guards the index. File I/O happens outside it: a chunk file
	// evicted while being read makes that read a miss.
	mu struct {
		sync.Mutex
		lru   *list.List // of *cacheEntry, most recent first
		index map[chunkKey]*list.Element
		size  int64
		seq   uint64
	}
}

type chunkKey struct {
	typ   objstorage.FileType
	num   uint64
	chunk int64
}

type cacheEntry struct {
	key  chunkKey
	size int64
	file string
}

func openDiskCache(fs vfs.FS, dir string, limit int64) (*diskCache, error) {
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tiering: create %s: %w", dir, err)
	}
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("tiering: list %s: %w", dir, err)
	}
	for _, n := range names {
		_ = fs.Remove(fs.PathJoin(dir, n))
	}
	c := &diskCache{fs: fs, dir: dir, limit: limit}
	c.mu.lru = list.New()
	c.mu.index = map[chunkKey]*list.Element{}
	return c, nil
}

// get reads the chunk into p (which must be the chunk's size) and reports
// whether it was cached.
func (c *diskCache) get(k chunkKey, p []byte) bool {
	c.mu.Lock()
	el, ok := c.mu.index[k]
	if !ok || el.Value.(*cacheEntry).size != int64(len(p)) {
		c.mu.Unlock()
		return false
	}
	c.mu.lru.MoveToFront(el)
	file := el.Value.(*cacheEntry).file
	c.mu.Unlock()
	f, err := c.fs.Open(c.fs.PathJoin(c.dir, file))
	if err != nil {
		return false
	}
	defer f.Close()
	n, _ := f.ReadAt(p, 0)
	return n == len(p)
}

// put stores a chunk. Errors are ignored: the cache is an optimization.
func (c *diskCache) put(k chunkKey, p []byte) {
	if c.limit <= 0 || int64(len(p)) > c.limit {
		return
	}
	c.mu.Lock()
	if _, ok := c.mu.index[k]; ok {
		c.mu.Unlock()
		return
	}
	c.mu.seq++
	file := fmt.Sprintf("%d-%06d-%d-%d", k.typ, k.num, k.chunk, c.mu.seq)
	c.mu.Unlock()
	f, err := c.fs.Create(c.fs.PathJoin(c.dir, file))
	if err != nil {
		return
	}
	_, err = f.Write(p)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = c.fs.Remove(c.fs.PathJoin(c.dir, file))
		return
	}
	var evict []string
	c.mu.Lock()
	if _, ok := c.mu.index[k]; ok {
		evict = append(evict, file) // lost a race with another put
	} else {
		c.mu.index[k] = c.mu.lru.PushFront(&cacheEntry{key: k, size: int64(len(p)), file: file})
		c.mu.size += int64(len(p))
		for c.mu.size > c.limit {
			el := c.mu.lru.Back()
			e := el.Value.(*cacheEntry)
			c.mu.lru.Remove(el)
			delete(c.mu.index, e.key)
			c.mu.size -= e.size
			evict = append(evict, e.file)
		}
	}
	c.mu.Unlock()
	for _, f := range evict {
		_ = c.fs.Remove(c.fs.PathJoin(c.dir, f))
	}
}

// evictObject drops every chunk of an object.
func (c *diskCache) evictObject(typ objstorage.FileType, num uint64) {
	var evict []string
	c.mu.Lock()
	for k, el := range c.mu.index {
		if k.typ == typ && k.num == num {
			e := el.Value.(*cacheEntry)
			c.mu.lru.Remove(el)
			delete(c.mu.index, k)
			c.mu.size -= e.size
			evict = append(evict, e.file)
		}
	}
	c.mu.Unlock()
	for _, f := range evict {
		_ = c.fs.Remove(c.fs.PathJoin(c.dir, f))
	}
}

// size returns the bytes cached.
func (c *diskCache) size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.size
}

// evictAll empties the cache.
func (c *diskCache) evictAll() {
	c.mu.Lock()
	var evict []string
	for _, el := range c.mu.index {
		evict = append(evict, el.Value.(*cacheEntry).file)
	}
	c.mu.index = map[chunkKey]*list.Element{}
	c.mu.lru.Init()
	c.mu.size = 0
	c.mu.Unlock()
	for _, f := range evict {
		_ = c.fs.Remove(c.fs.PathJoin(c.dir, f))
	}
}
