package bench

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

func init() { register("pebble", openPebble) }

type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{})  {}
func (quietLogger) Errorf(string, ...interface{}) {}
func (quietLogger) Fatalf(format string, args ...interface{}) {
	panic(fmt.Sprintf(format, args...))
}

type pebbleEngine struct {
	db   *pebble.DB
	desc string
}

// pebbleValueSeparation mirrors what Pebble's own benchmark tool
// (cmd/pebble/db.go in pebble v2) configures for value separation.
func pebbleValueSeparation() pebble.ValueSeparationPolicy {
	return pebble.ValueSeparationPolicy{
		Enabled:               true,
		MinimumSize:           512,
		MaxBlobReferenceDepth: 10,
		RewriteMinimumAge:     5 * time.Minute,
		TargetGarbageRatio:    1.0, // no blob rewrites; the workload never overwrites
	}
}

func openPebble(dir string, cfg EngineConfig) (Engine, error) {
	opts := &pebble.Options{
		MemTableSize: uint64(cfg.MemTableSize),
		CacheSize:    cfg.BlockCacheSize,
		// Value separation (blob files) needs FormatValueSeparation or newer.
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{},
	}
	// Value separation is ignored unless columnar blocks are enabled.
	opts.Experimental.EnableColumnarBlocks = func() bool { return true }
	opts.Experimental.ValueSeparationPolicy = pebbleValueSeparation
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(cfg.BloomBitsPerKey)
	}
	opts.EnsureDefaults()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	vs := pebbleValueSeparation()
	return &pebbleEngine{db: db, desc: fmt.Sprintf(
		"pebble/v2 FormatNewest(%d) memtable=%s cache=%s bloom=%d bits/key on all levels; "+
			"columnar blocks on, value separation on (MinimumSize=%d, MaxBlobReferenceDepth=%d); sync per write via pebble.Sync/NoSync",
		opts.FormatMajorVersion, fmtBytes(cfg.MemTableSize), fmtBytes(cfg.BlockCacheSize), cfg.BloomBitsPerKey,
		vs.MinimumSize, vs.MaxBlobReferenceDepth)}, nil
}

func (e *pebbleEngine) Set(k, v []byte, sync bool) error {
	wo := pebble.NoSync
	if sync {
		wo = pebble.Sync
	}
	return e.db.Set(k, v, wo)
}

func (e *pebbleEngine) Get(k []byte, check func([]byte) error) (bool, error) {
	v, closer, err := e.db.Get(k)
	if err == pebble.ErrNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	err = check(v)
	if cerr := closer.Close(); err == nil {
		err = cerr
	}
	return true, err
}

func (e *pebbleEngine) Quiesce() error { return e.db.Flush() }

func (e *pebbleEngine) Busy() bool {
	m := e.db.Metrics()
	return m.Compact.NumInProgress > 0 || m.Flush.NumInProgress > 0
}

func (e *pebbleEngine) Describe() string { return e.desc }
func (e *pebbleEngine) Close() error     { return e.db.Close() }
