package bench

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

func init() { register("badger", openBadger) }

// badgerValueThreshold: values of at least this many bytes go to the value
// log (Badger's default in v4 is 1 MiB, which would keep 10 KiB values in
// the LSM tree).
const badgerValueThreshold = 1 << 10

type badgerEngine struct {
	db   *badger.DB
	desc string
}

func openBadger(dir string, cfg EngineConfig) (Engine, error) {
	fpr := 0.01 // Badger's default, ~10 bits/key
	if cfg.BloomBitsPerKey > 0 {
		// A bloom filter with b bits/key and optimal hashing has a false
		// positive rate of about 0.6185^b.
		fpr = pow(0.6185, cfg.BloomBitsPerKey)
	}
	opts := badger.DefaultOptions(dir).
		WithLogger(nil).
		WithSyncWrites(cfg.SyncWrites).
		WithValueThreshold(badgerValueThreshold).
		WithMemTableSize(cfg.MemTableSize).
		WithBlockCacheSize(cfg.BlockCacheSize).
		WithBloomFalsePositive(fpr).
		// Blind writes only: conflict detection is pure overhead.
		WithDetectConflicts(false)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, err
	}
	return &badgerEngine{db: db, desc: fmt.Sprintf(
		"badger/v4 ValueThreshold=%d (10 KiB values go to the value log) memtable=%s block-cache=%s "+
			"bloom fpr=%.4f SyncWrites=%v DetectConflicts=false, other options default (NumMemtables=%d, NumCompactors=%d, Compression=Snappy)",
		badgerValueThreshold, fmtBytes(cfg.MemTableSize), fmtBytes(cfg.BlockCacheSize), fpr, cfg.SyncWrites,
		opts.NumMemtables, opts.NumCompactors)}, nil
}

func pow(x float64, n int) float64 {
	r := 1.0
	for i := 0; i < n; i++ {
		r *= x
	}
	return r
}

// Set ignores sync: Badger syncs per DB (SyncWrites), set at open from
// EngineConfig.SyncWrites.
func (e *badgerEngine) Set(k, v []byte, _ bool) error {
	return e.db.Update(func(txn *badger.Txn) error { return txn.Set(k, v) })
}

func (e *badgerEngine) Get(k []byte, check func([]byte) error) (bool, error) {
	found := false
	err := e.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		found = true
		return item.Value(check)
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return found, err
}

// Quiesce: Badger has no public memtable-flush call (Close flushes it) and
// no "wait for compactions"; the harness relies on Busy and I/O quiescence.
func (e *badgerEngine) Quiesce() error { return e.db.Sync() }

// Busy reports whether any level's compaction score is >= 1, i.e. Badger's
// compactors would pick it.
func (e *badgerEngine) Busy() bool {
	for _, l := range e.db.Levels() {
		if l.Score >= 1.0 {
			return true
		}
	}
	return false
}

func (e *badgerEngine) Describe() string { return e.desc }
func (e *badgerEngine) Close() error     { return e.db.Close() }
