package node

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tierkv/tierkv/lsm"
)

// Version layout (64 bits), compatible with lsm.DefaultVersionTime, which
// reads the high 48 bits as Unix milliseconds:
//
//	| physical ms (48) | logical counter (10) | node tie-break (6) |
//
// The clock itself is the 58-bit value ms<<10 | logical; it only moves
// forward: Next returns max(now<<10, last+1), so a logical counter that
// overflows 1023 carries into the milliseconds (the clock runs ahead of the
// wall clock by at most the burst; 1024 writes per millisecond per node).
// The low 6 bits are the coordinator's clock id, unique in the cluster
// (picked at first join like tokens, gossiped, see clockid.go), so two
// coordinators stamping in the same millisecond with the same counter
// still produce different versions. Part of the on-disk format; do not
// change.
const (
	hlcNodeBits    = 6
	hlcLogicalBits = 10
	hlcNodeMask    = 1<<hlcNodeBits - 1
)

// HLC is a hybrid logical clock that stamps versions. It is safe for
// concurrent use.
type HLC struct {
	clock lsm.Clock
	// node is the clock id stamped in the low bits.
	node atomic.Uint64
	mu   struct {
		sync.Mutex
		// last is the last clock value handed out or observed (without
		// node bits).
		last uint64
	}
}

// NewHLC returns a clock reading physical time from clock and stamping
// clockID (0..63) in the tie-break bits.
func NewHLC(clock lsm.Clock, clockID uint8) *HLC {
	h := &HLC{clock: clock}
	h.SetClockID(clockID)
	return h
}

// SetClockID changes the tie-break bits of the versions Next returns from
// now on (a node that re-picked its clock id). Versions keep increasing:
// the clock part does.
func (h *HLC) SetClockID(id uint8) { h.node.Store(uint64(id) & hlcNodeMask) }

// Next returns a version greater than every version it returned or
// observed before.
func (h *HLC) Next() uint64 {
	phys := uint64(h.clock.Now().UnixMilli()) << hlcLogicalBits
	h.mu.Lock()
	c := max(phys, h.mu.last+1)
	h.mu.last = c
	h.mu.Unlock()
	return c<<hlcNodeBits | h.node.Load()
}

// Observe moves the clock past version v (a version a client saw, or one a
// replica holds), so that the next version is greater than v.
func (h *HLC) Observe(v uint64) {
	c := v >> hlcNodeBits
	h.mu.Lock()
	h.mu.last = max(h.mu.last, c)
	h.mu.Unlock()
}

// VersionTime returns the wall time a version was stamped at; it equals
// lsm.DefaultVersionTime.
func VersionTime(v uint64) time.Time {
	return time.UnixMilli(int64(v >> (hlcNodeBits + hlcLogicalBits)))
}
