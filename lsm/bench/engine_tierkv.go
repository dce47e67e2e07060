//go:build !notierkv

package bench

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tierkv/tierkv/lsm"
)

func init() { register("tierkv", openTierkv) }

// tierkvVersion hands out monotonically increasing versions (starting at 1)
// across every tierkv DB the process opens.
var tierkvVersion atomic.Uint64

type tierkvEngine struct {
	db   *lsm.DB
	desc string
}

func openTierkv(dir string, cfg EngineConfig) (Engine, error) {
	opts := &lsm.Options{
		MemTableSize:    cfg.MemTableSize,
		BlockCacheSize:  cfg.BlockCacheSize,
		BloomBitsPerKey: cfg.BloomBitsPerKey,
	}
	db, err := lsm.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	return &tierkvEngine{db: db, desc: fmt.Sprintf(
		"tierkv lsm MemTableSize=%s BlockCacheSize=%s BloomBitsPerKey=%d, other options default; sync per write via lsm.Sync/NoSync",
		fmtBytes(cfg.MemTableSize), fmtBytes(cfg.BlockCacheSize), cfg.BloomBitsPerKey)}, nil
}

func (e *tierkvEngine) Set(k, v []byte, sync bool) error {
	wo := lsm.NoSync
	if sync {
		wo = lsm.Sync
	}
	return e.db.Set(k, v, tierkvVersion.Add(1), wo)
}

func (e *tierkvEngine) Get(k []byte, check func([]byte) error) (bool, error) {
	v, _, err := e.db.Get(k)
	if errors.Is(err, lsm.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, check(v)
}

func (e *tierkvEngine) Quiesce() error {
	if err := e.db.Flush(); err != nil {
		return err
	}
	return e.db.WaitForCompactions()
}

func (e *tierkvEngine) Busy() bool       { return false }
func (e *tierkvEngine) Describe() string { return e.desc }
func (e *tierkvEngine) Close() error     { return e.db.Close() }
