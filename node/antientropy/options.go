package antientropy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/tierkv/tierkv/lsm"
)

var (
	// ErrInvalidRanges is returned for token ranges that overlap.
	ErrInvalidRanges = errors.New("antientropy: invalid ranges")
	// ErrNoTree is returned by Hashes for a range the peer has no prepared
	// tree of (never prepared, expired or evicted); the initiator skips the
	// range for this session.
	ErrNoTree = errors.New("antientropy: no prepared tree for range")
	// ErrInvalidRequest is returned for a malformed request: a depth out of
	// bounds, a node or leaf index outside the tree, or too many items.
	ErrInvalidRequest = errors.New("antientropy: invalid request")
	// ErrTooLarge is returned by LeafDigests when the answer would exceed
	// Options.MaxDigestBytes; the initiator then asks for fewer leaves.
	ErrTooLarge = errors.New("antientropy: answer too large")
	// ErrClosed is returned by a closed Scheduler.
	ErrClosed = errors.New("antientropy: closed")
)

const (
	// MaxDepth bounds Options.Depth: a tree of depth d holds 2^(d+1)-1
	// hashes (8 bytes each).
	MaxDepth = 20
	// DefaultDepth is the default tree depth (4096 leaves, 64 KiB a tree).
	DefaultDepth = 12
)

// Clock tells the time and waits. The package reads time only through a Clock
// so that tests control it.
type Clock interface {
	Now() time.Time
	// Sleep blocks for d or until ctx is done, and then returns ctx.Err().
	Sleep(ctx context.Context, d time.Duration) error
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SystemClock is the wall clock.
var SystemClock Clock = systemClock{}

// Options configures a Local (both sides of a repair use the same options).
// The zero value of every field means "use the default".
type Options struct {
	// Depth is the depth of every Merkle tree: 2^Depth leaves per range.
	// Both replicas must use the same depth (Prepare carries it). Default
	// DefaultDepth; at most MaxDepth.
	Depth int
	// TombstoneGracePeriod must equal the engine's
	// lsm.Options.TombstoneGracePeriod: an entry older than it is never
	// repaired onto a replica that holds no version of the key (see
	// doc.go, "Grace period"). Default 10 days, the engine's default.
	TombstoneGracePeriod time.Duration
	// GraceMargin widens the grace rule by this much to absorb clock skew
	// between replicas: entries older than TombstoneGracePeriod-GraceMargin
	// count as past grace. Default 1 h (the HLC keeps replicas far closer).
	GraceMargin time.Duration
	// VersionTime maps a version to the wall time it was stamped.
	// Default lsm.DefaultVersionTime, which the node's HLC layout matches.
	VersionTime func(version uint64) time.Time
	// Clock is the time source (grace rule, tree cache, rate limiting).
	// Default SystemClock.
	Clock Clock
	// Limiter, when set, bounds the bytes a repair streams (entries fetched
	// and pushed, digests received): every byte takes one token. Its burst
	// must be at least 1. Default: unlimited.
	Limiter *rate.Limiter
	// MaxNodesPerCall bounds the node indexes of one Hashes call.
	// Default 4096.
	MaxNodesPerCall int
	// MaxLeavesPerCall bounds the leaves of one LeafDigests call (each call
	// is one scan of the engine on both sides). Default 16384.
	MaxLeavesPerCall int
	// MaxDigestBytes bounds the encoded size of one LeafDigests answer
	// (ErrTooLarge beyond it); the initiator splits its request until the
	// answers fit. Keep it under the transport's message bound. Default
	// 3 MiB (gRPC's default bound is 4 MiB).
	MaxDigestBytes int
	// MaxBatchKeys bounds the keys of one Fetch or Push. Default 512.
	MaxBatchKeys int
	// MaxBatchBytes bounds the size (keys, values and 9 bytes each) of
	// one Push batch and of one Fetch answer, except that a batch always
	// holds at least one entry: the transport's message bound must be at
	// least MaxBatchBytes plus the largest entry. Default 1 MiB.
	MaxBatchBytes int
	// TreeTTL is how long a tree built by Prepare is kept for the Hashes
	// calls of its session. Default 10 minutes.
	TreeTTL time.Duration
	// MaxCachedTrees bounds the trees Prepare keeps; the oldest go first.
	// Default 1024.
	MaxCachedTrees int
}

// EnsureDefaults fills zero fields with their defaults and returns o. It
// accepts a nil receiver and then returns a new Options.
func (o *Options) EnsureDefaults() *Options {
	if o == nil {
		o = &Options{}
	}
	if o.Depth == 0 {
		o.Depth = DefaultDepth
	}
	if o.TombstoneGracePeriod == 0 {
		o.TombstoneGracePeriod = 10 * 24 * time.Hour // the engine's default
	}
	if o.GraceMargin == 0 {
		o.GraceMargin = time.Hour
	}
	if o.VersionTime == nil {
		o.VersionTime = lsm.DefaultVersionTime
	}
	if o.Clock == nil {
		o.Clock = SystemClock
	}
	if o.MaxNodesPerCall == 0 {
		o.MaxNodesPerCall = 4096
	}
	if o.MaxLeavesPerCall == 0 {
		o.MaxLeavesPerCall = 16384
	}
	if o.MaxDigestBytes == 0 {
		o.MaxDigestBytes = 3 << 20 // under gRPC's default 4 MiB message bound
	}
	if o.MaxBatchKeys == 0 {
		o.MaxBatchKeys = 512
	}
	if o.MaxBatchBytes == 0 {
		o.MaxBatchBytes = 1 << 20
	}
	if o.TreeTTL == 0 {
		o.TreeTTL = 10 * time.Minute
	}
	if o.MaxCachedTrees == 0 {
		o.MaxCachedTrees = 1024
	}
	return o
}

// Validate reports whether the options are usable. Call it after
// EnsureDefaults.
func (o *Options) Validate() error {
	switch {
	case o.Depth < 0 || o.Depth > MaxDepth:
		return fmt.Errorf("antientropy: Depth %d not in [0, %d]", o.Depth, MaxDepth)
	case o.TombstoneGracePeriod < 0 || o.GraceMargin < 0:
		return errors.New("antientropy: negative grace period or margin")
	case o.GraceMargin >= o.TombstoneGracePeriod:
		return fmt.Errorf("antientropy: GraceMargin %v must be below TombstoneGracePeriod %v", o.GraceMargin, o.TombstoneGracePeriod)
	case o.Limiter != nil && o.Limiter.Limit() != rate.Inf && o.Limiter.Burst() < 1:
		return errors.New("antientropy: Limiter burst must be at least 1")
	case o.MaxNodesPerCall < 2 || o.MaxLeavesPerCall < 1 || o.MaxBatchKeys < 1 || o.MaxBatchBytes < 1 || o.MaxDigestBytes < 1:
		return errors.New("antientropy: batch bounds must be positive (MaxNodesPerCall at least 2)")
	case o.TreeTTL < 0 || o.MaxCachedTrees < 1:
		return errors.New("antientropy: TreeTTL must not be negative, MaxCachedTrees positive")
	}
	return nil
}

// waitN takes n tokens from lim, in chunks of at most its burst, sleeping on
// clock for each reservation's delay. A nil or infinite limiter never waits.
func waitN(ctx context.Context, lim *rate.Limiter, clock Clock, n int) error {
	if lim == nil || lim.Limit() == rate.Inf {
		return ctx.Err()
	}
	for n > 0 {
		c := min(n, lim.Burst())
		now := clock.Now()
		r := lim.ReserveN(now, c)
		if !r.OK() {
			return fmt.Errorf("antientropy: limiter refused %d tokens", c)
		}
		if d := r.DelayFrom(now); d > 0 {
			if err := clock.Sleep(ctx, d); err != nil {
				r.CancelAt(clock.Now())
				return err
			}
		}
		n -= c
	}
	return nil
}
