package antientropy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/ring"
)

// Local is one replica's side of anti-entropy, over its engine. It builds
// trees and digests, serves a remote initiator (it implements Peer: the
// node's gRPC server calls these methods) and runs repairs as the initiator
// (Repair). It is safe for concurrent use and starts no goroutines.
type Local struct {
	db   *lsm.DB
	opts Options

	// mu guards the trees Prepare built for later Hashes calls.
	mu struct {
		sync.Mutex
		trees map[ring.Range]cachedTree
	}
}

type cachedTree struct {
	t       *Tree
	builtAt time.Time
}

// NewLocal returns the anti-entropy side of db. opts may be nil; it is copied,
// defaulted and validated.
func NewLocal(db *lsm.DB, opts *Options) (*Local, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	l := &Local{db: db, opts: o}
	l.mu.trees = make(map[ring.Range]cachedTree)
	return l, nil
}

// Options returns a copy of the options in use.
func (l *Local) Options() Options { return l.opts }

// scan visits every key of the engine (newest version, tombstones included)
// whose token falls in one of ranges, with the index of its range. The key
// and value are valid only during the call.
func (l *Local) scan(ctx context.Context, ranges []ring.Range, fn func(ri int, tok ring.Token, it *lsm.Iterator)) error {
	idx := newRangeIndex(ranges)
	// NB: the engine holds only keys this node replicates, so one scan of
	// everything is no more work than one scan per range, and fewer.
	it, err := l.db.NewIter(&lsm.IterOptions{IncludeTombstones: true})
	if err != nil {
		return err
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				_ = it.Close()
				return err
			}
		}
		tok := ring.KeyToken(it.Key())
		if ri := idx.find(tok); ri >= 0 {
			fn(ri, tok, it)
		}
	}
	return it.Close()
}

// BuildTrees builds the trees of ranges at depth with one scan of the engine.
// REQUIRES: ranges are disjoint (ErrInvalidRanges otherwise).
func (l *Local) BuildTrees(ctx context.Context, ranges []ring.Range, depth int) ([]*Tree, error) {
	if depth < 0 || depth > MaxDepth {
		return nil, fmt.Errorf("%w: depth %d", ErrInvalidRequest, depth)
	}
	if err := validateRanges(ranges); err != nil {
		return nil, err
	}
	trees := make([]*Tree, len(ranges))
	for i, r := range ranges {
		trees[i] = newTree(r, depth)
	}
	err := l.scan(ctx, ranges, func(ri int, tok ring.Token, it *lsm.Iterator) {
		trees[ri].add(tok, EntryHash(it.Key(), it.Version(), it.Deleted(), xxhash.Sum64(it.Value())))
	})
	if err != nil {
		return nil, fmt.Errorf("antientropy: build trees: %w", err)
	}
	for _, t := range trees {
		t.finish()
	}
	return trees, nil
}

// Prepare is part of the Peer interface.
func (l *Local) Prepare(ctx context.Context, ranges []ring.Range, depth int) ([]uint64, error) {
	trees, err := l.BuildTrees(ctx, ranges, depth)
	if err != nil {
		return nil, err
	}
	now := l.opts.Clock.Now()
	roots := make([]uint64, len(trees))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	for i, t := range trees {
		roots[i] = t.Root()
		l.mu.trees[t.r] = cachedTree{t: t, builtAt: now}
	}
	for len(l.mu.trees) > l.opts.MaxCachedTrees {
		var oldest ring.Range
		var at time.Time
		first := true
		for r, c := range l.mu.trees {
			if first || c.builtAt.Before(at) {
				oldest, at, first = r, c.builtAt, false
			}
		}
		delete(l.mu.trees, oldest)
	}
	return roots, nil
}

func (l *Local) expireLocked(now time.Time) {
	for r, c := range l.mu.trees {
		if now.Sub(c.builtAt) > l.opts.TreeTTL {
			delete(l.mu.trees, r)
		}
	}
}

// Hashes is part of the Peer interface.
func (l *Local) Hashes(ctx context.Context, r ring.Range, nodes []NodeIndex) ([]uint64, error) {
	if len(nodes) > l.opts.MaxNodesPerCall {
		return nil, fmt.Errorf("%w: %d nodes, at most %d", ErrInvalidRequest, len(nodes), l.opts.MaxNodesPerCall)
	}
	l.mu.Lock()
	l.expireLocked(l.opts.Clock.Now())
	c, ok := l.mu.trees[r]
	l.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w %v", ErrNoTree, r)
	}
	out := make([]uint64, len(nodes))
	for i, n := range nodes {
		h, ok := c.t.Hash(n)
		if !ok {
			return nil, fmt.Errorf("%w: node %d outside a tree of depth %d", ErrInvalidRequest, n, c.t.depth)
		}
		out[i] = h
	}
	return out, ctx.Err()
}

// LeafDigests is part of the Peer interface.
func (l *Local) LeafDigests(ctx context.Context, depth int, sets []LeafSet) ([]KeyDigest, error) {
	if depth < 0 || depth > MaxDepth {
		return nil, fmt.Errorf("%w: depth %d", ErrInvalidRequest, depth)
	}
	ranges := make([]ring.Range, len(sets))
	want := make([]map[int]bool, len(sets))
	total := 0
	for i, s := range sets {
		ranges[i] = s.Range
		want[i] = make(map[int]bool, len(s.Leaves))
		for _, lf := range s.Leaves {
			if lf < 0 || lf >= 1<<depth {
				return nil, fmt.Errorf("%w: leaf %d outside a tree of depth %d", ErrInvalidRequest, lf, depth)
			}
			want[i][lf] = true
		}
		total += len(s.Leaves)
	}
	if total > l.opts.MaxLeavesPerCall {
		return nil, fmt.Errorf("%w: %d leaves, at most %d", ErrInvalidRequest, total, l.opts.MaxLeavesPerCall)
	}
	if err := validateRanges(ranges); err != nil {
		return nil, err
	}
	var out []KeyDigest
	size, tooLarge := 0, false
	err := l.scan(ctx, ranges, func(ri int, tok ring.Token, it *lsm.Iterator) {
		if !tooLarge && want[ri][LeafOf(ranges[ri], depth, tok)] {
			// Bound on the encoded size (prefix compression only
			// shrinks it).
			if size += len(it.Key()) + 2*binary.MaxVarintLen32 + 17; size > l.opts.MaxDigestBytes {
				tooLarge, out = true, nil
				return
			}
			out = append(out, KeyDigest{
				Key:       append([]byte(nil), it.Key()...),
				Version:   it.Version(),
				Deleted:   it.Deleted(),
				ValueHash: xxhash.Sum64(it.Value()),
			})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("antientropy: leaf digests: %w", err)
	}
	if tooLarge {
		return nil, fmt.Errorf("%w: digests of %d leaves exceed %d bytes", ErrTooLarge, total, l.opts.MaxDigestBytes)
	}
	return out, nil
}

// Fetch is part of the Peer interface.
func (l *Local) Fetch(ctx context.Context, keys [][]byte) ([]lsm.Entry, int, error) {
	if len(keys) > l.opts.MaxBatchKeys {
		return nil, 0, fmt.Errorf("%w: %d keys, at most %d", ErrInvalidRequest, len(keys), l.opts.MaxBatchKeys)
	}
	out := make([]lsm.Entry, 0, len(keys))
	size := 0
	for i, k := range keys {
		if size >= l.opts.MaxBatchBytes {
			return out, i, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		e, err := l.db.GetEntry(k)
		if errors.Is(err, lsm.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("antientropy: fetch: %w", err)
		}
		out = append(out, e)
		size += EntrySize(e)
	}
	return out, len(keys), nil
}

// Push is part of the Peer interface.
func (l *Local) Push(ctx context.Context, entries []lsm.Entry) error {
	if len(entries) > l.opts.MaxBatchKeys {
		return fmt.Errorf("%w: %d entries, at most %d", ErrInvalidRequest, len(entries), l.opts.MaxBatchKeys)
	}
	_, err := l.apply(ctx, entries)
	return err
}

// pastGrace reports whether a version is older than the grace period (minus
// the margin): such an entry may be one whose tombstone a replica has purged.
func (l *Local) pastGrace(version uint64) bool {
	cutoff := l.opts.Clock.Now().Add(-(l.opts.TombstoneGracePeriod - l.opts.GraceMargin))
	return l.opts.VersionTime(version).Before(cutoff)
}

// apply writes entries to the engine with their versions (lsm.Sync), leaving
// out those past grace whose key the engine holds no version of. It returns
// how many it left out.
func (l *Local) apply(ctx context.Context, entries []lsm.Entry) (skipped int, err error) {
	var b lsm.Batch
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return skipped, err
		}
		if l.pastGrace(e.Version) {
			// INVARIANT (grace rule): never recreate, past the grace
			// period, a key this replica holds nothing of: its
			// tombstone may have been purged here.
			if _, err := l.db.GetEntry(e.Key); errors.Is(err, lsm.ErrNotFound) {
				skipped++
				continue
			} else if err != nil {
				return skipped, fmt.Errorf("antientropy: apply: %w", err)
			}
		}
		if e.Deleted {
			b.Delete(e.Key, e.Version)
		} else {
			b.Set(e.Key, e.Value, e.Version)
		}
	}
	if b.Len() == 0 {
		return skipped, nil
	}
	if err := l.db.Apply(&b, lsm.Sync); err != nil {
		return skipped, fmt.Errorf("antientropy: apply: %w", err)
	}
	return skipped, nil
}
