package bench

import (
	"fmt"
	"sync"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/filter"
	"github.com/syndtr/goleveldb/leveldb/opt"
)

func init() { register("goleveldb", openGoleveldb) }

type goleveldbEngine struct {
	db   *leveldb.DB
	dir  string
	opts *opt.Options
	desc string

	mu        sync.Mutex
	lastStats string
}

var (
	leveldbSync   = &opt.WriteOptions{Sync: true}
	leveldbNoSync = &opt.WriteOptions{Sync: false}
)

func openGoleveldb(dir string, cfg EngineConfig) (Engine, error) {
	o := &opt.Options{
		WriteBuffer:        int(cfg.MemTableSize),
		BlockCacheCapacity: int(cfg.BlockCacheSize),
		Filter:             filter.NewBloomFilter(cfg.BloomBitsPerKey),
	}
	db, err := leveldb.OpenFile(dir, o)
	if err != nil {
		return nil, err
	}
	return &goleveldbEngine{db: db, dir: dir, opts: o, desc: fmt.Sprintf(
		"goleveldb WriteBuffer=%s BlockCacheCapacity=%s Filter=bloom(%d bits/key) Compression=Snappy(default), other options default; sync per write via opt.WriteOptions{Sync}",
		fmtBytes(cfg.MemTableSize), fmtBytes(cfg.BlockCacheSize), cfg.BloomBitsPerKey)}, nil
}

func (e *goleveldbEngine) Set(k, v []byte, sync bool) error {
	wo := leveldbNoSync
	if sync {
		wo = leveldbSync
	}
	return e.db.Put(k, v, wo)
}

func (e *goleveldbEngine) Get(k []byte, check func([]byte) error) (bool, error) {
	v, err := e.db.Get(k, nil)
	if err == leveldb.ErrNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, check(v)
}

// Quiesce flushes the memdb. goleveldb has no flush call (CompactRange only
// flushes the memdb together with a table compaction of the same range), but
// reopening recovers the journal and writes the recovered memdb to a level-0
// table, which is exactly a memtable flush. Only called with no operations in
// flight.
func (e *goleveldbEngine) Quiesce() error {
	if err := e.db.Close(); err != nil {
		return err
	}
	db, err := leveldb.OpenFile(e.dir, e.opts)
	if err != nil {
		return err
	}
	e.db = db
	return nil
}

// Busy: goleveldb has no public "compaction pending" signal. Report busy
// while its per-level stats (table counts, sizes and compaction totals)
// change between polls.
func (e *goleveldbEngine) Busy() bool {
	s, err := e.db.GetProperty("leveldb.stats")
	if err != nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := s != e.lastStats
	e.lastStats = s
	return changed
}

func (e *goleveldbEngine) Describe() string { return e.desc }
func (e *goleveldbEngine) Close() error     { return e.db.Close() }
