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
		// reserved counts bytes of chunk files being written: space is
		// reserved (and older chunks evicted and deleted) before a file
		// is written, so the files on disk never exceed the limit.
		reserved int64
		seq      uint64
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
	n := int64(len(p))
	if c.limit <= 0 || n > c.limit {
		return
	}
	c.mu.Lock()
	if _, ok := c.mu.index[k]; ok {
		c.mu.Unlock()
		return
	}
	var evict []string
	for c.mu.size+c.mu.reserved+n > c.limit && c.mu.lru.Len() > 0 {
		el := c.mu.lru.Back()
		e := el.Value.(*cacheEntry)
		c.mu.lru.Remove(el)
		delete(c.mu.index, e.key)
		c.mu.size -= e.size
		evict = append(evict, e.file)
	}
	if c.mu.size+c.mu.reserved+n > c.limit {
		// Other puts hold the rest of the space; skip caching this one.
		c.mu.Unlock()
		c.remove(evict)
		return
	}
	c.mu.reserved += n
	c.mu.seq++
	file := fmt.Sprintf("%d-%06d-%d-%d", k.typ, k.num, k.chunk, c.mu.seq)
	c.mu.Unlock()
	// NB: evicted files go before the new one is written, so the cache
	// directory never holds more than the limit.
	c.remove(evict)
	err := c.writeChunk(file, p)
	c.mu.Lock()
	c.mu.reserved -= n
	_, raced := c.mu.index[k]
	if err == nil && !raced {
		c.mu.index[k] = c.mu.lru.PushFront(&cacheEntry{key: k, size: n, file: file})
		c.mu.size += n
	}
	c.mu.Unlock()
	if err != nil || raced {
		c.remove([]string{file})
	}
}

func (c *diskCache) writeChunk(file string, p []byte) error {
	f, err := c.fs.Create(c.fs.PathJoin(c.dir, file))
	if err != nil {
		return err
	}
	_, err = f.Write(p)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (c *diskCache) remove(files []string) {
	for _, f := range files {
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
