package bench

import (
	"fmt"
	"sort"
)

// EngineConfig is the budget shared by every engine: the same memtable size,
// block cache size and bloom filter density.
type EngineConfig struct {
	MemTableSize    int64
	BlockCacheSize  int64
	BloomBitsPerKey int
	// SyncWrites is true for the workloads that sync every write. Pebble,
	// goleveldb and tierkv choose sync per write; Badger only per DB, so its
	// adapter opens the DB with SyncWrites set accordingly.
	SyncWrites bool
}

// Engine is the small surface the harness drives. Every implementation must
// be safe for concurrent use by many goroutines.
type Engine interface {
	// Set writes key=value, durably (fsync before returning) when sync is set.
	Set(key, value []byte, sync bool) error
	// Get looks up key and calls check with the value while it is valid. It
	// returns found=false (and nil error) for an absent key.
	Get(key []byte, check func(value []byte) error) (found bool, err error)
	// Quiesce asks the engine to persist its memtable(s) and, where the
	// engine has an API for it, waits for its background work to finish.
	Quiesce() error
	// Busy reports whether the engine says background compaction/flush work
	// is pending or running. Engines without such a signal return false and
	// rely on the harness' I/O-quiescence check.
	Busy() bool
	// Describe returns a one-line summary of the configuration used.
	Describe() string
	Close() error
}

// Opener opens (creating if needed) an engine in dir.
type Opener func(dir string, cfg EngineConfig) (Engine, error)

var registry = map[string]Opener{}

// engineOrder is the default run order; tierkv first, then the peers.
var engineOrder = []string{"tierkv", "pebble", "badger", "goleveldb"}

func register(name string, o Opener) { registry[name] = o }

// Engines returns the names of the engines compiled into this binary, in the
// default order.
func Engines() []string {
	var out []string
	for _, n := range engineOrder {
		if _, ok := registry[n]; ok {
			out = append(out, n)
		}
	}
	var extra []string
	for n := range registry {
		found := false
		for _, o := range engineOrder {
			if o == n {
				found = true
			}
		}
		if !found {
			extra = append(extra, n)
		}
	}
	sort.Strings(extra)
	return append(out, extra...)
}

func openEngine(name, dir string, cfg EngineConfig) (Engine, error) {
	o, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("engine %q is not compiled in (have %v)", name, Engines())
	}
	return o(dir, cfg)
}
