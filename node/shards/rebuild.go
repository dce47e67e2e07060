package shards

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/ring"
)

// RebuildOptions configures Rebuild.
type RebuildOptions struct {
	// Prefix restricts the rebuild to Self's objects whose names start
	// with it. Default: all of them.
	Prefix string
	// Concurrency is the number of objects repaired at once. Each holds
	// about (K+M)/K times its object in memory. Default 2.
	Concurrency int
	// Progress, if set, is called after the scan and after each object,
	// one call at a time. It must not block for long.
	Progress func(RebuildProgress)
}

// RebuildProgress reports how far a Rebuild is.
type RebuildProgress struct {
	// Done of Total objects examined.
	Done, Total int
	// Stats so far.
	Stats RebuildStats
}

// RebuildStats counts what a Rebuild found and did.
type RebuildStats struct {
	// Objects is the number of Self's objects found: names with at least
	// one shard on a reachable node.
	Objects int
	// Healthy objects had every shard on its node and no other copy:
	// nothing was read or written.
	Healthy int
	// Repaired objects now have every shard on its node.
	Repaired int
	// ShardsRebuilt were reconstructed from the others (they were lost,
	// damaged or stale); ShardsMoved were copied to their node from where
	// an earlier ring placed them; StraysDeleted are copies removed from
	// nodes that do not hold their slot (any more).
	ShardsRebuilt, ShardsMoved, StraysDeleted int
	// Skipped objects have a shard placed on an unreachable node: they
	// cannot be checked or repaired now.
	Skipped int
	// Failed objects could not be repaired (fewer than K good shards, a
	// write failed, ...); Rebuild's error names them.
	Failed int
	// BytesRead and BytesWritten count shard bytes moved over the network.
	BytesRead, BytesWritten int64
	// Unreachable lists the nodes whose shard stores could not be listed.
	Unreachable []ring.NodeID
}

// maxReportedFailures bounds the failures Rebuild's error lists.
const maxReportedFailures = 10

// Rebuild restores the redundancy of Self's objects on the current ring:
// it lists Self's shards on every placed node other than Self and, for
// each object, makes every slot's shard be on the node the current
// placement gives it, and nowhere else:
//
//   - a shard that is on another node only (an earlier ring placed it
//     there, or its node is LEAVING) is copied to its node;
//   - a shard that is nowhere, or damaged, or of another upload, is
//     reconstructed from K good shards of the object and written to its
//     node, with the same header (object id) as the others, so the object
//     never reads as a mix of two uploads;
//   - then the copies on other nodes are deleted.
//
// Run it when a node lost its shard store (it was replaced, its disk was
// wiped), after a node joined or left the ring, or periodically: it is
// idempotent, and an object with every shard in place costs nothing but
// its listing. Objects with a shard placed on an unreachable node are
// skipped (counted); the shards of a node that is unreachable during the
// scan are treated as lost.
//
// Rebuild assumes Self's objects are immutable (tierkv's are): a
// concurrent overwrite of an object may be mixed with its old shards, and
// an object deleted while Rebuild repairs it may keep a shard (it then
// lists as an object that cannot be read, and later Rebuilds fail on it).
//
// It returns the counts and an error if the scan failed or any object
// could not be repaired.
func Rebuild(ctx context.Context, o Options, ro RebuildOptions) (RebuildStats, error) {
	f, err := newFleet(o)
	if err != nil {
		return RebuildStats{}, err
	}
	if ro.Concurrency <= 0 {
		ro.Concurrency = 2
	}
	if err := objectstore.ValidatePrefix(ro.Prefix); err != nil {
		return RebuildStats{}, fmt.Errorf("node/shards: rebuild: %w", err)
	}
	rb := &rebuilder{f: f, ro: ro, l: f.layout(), maxShard: f.maxShardSize()}
	if len(rb.l.placed) == 0 {
		return RebuildStats{}, fmt.Errorf("node/shards: rebuild: %w", ErrNoPeers)
	}
	locs, err := rb.scan(ctx)
	if err != nil {
		return rb.stats, err
	}
	names := make([]string, 0, len(locs))
	for n := range locs {
		names = append(names, n)
	}
	slices.Sort(names)
	rb.stats.Objects = len(names)
	rb.total = len(names)
	rb.progress()

	work := make(chan string)
	var wg sync.WaitGroup
	for range ro.Concurrency {
		wg.Go(func() {
			for name := range work {
				rb.object(ctx, name, locs[name])
			}
		})
	}
	for _, n := range names {
		if ctx.Err() != nil {
			break
		}
		work <- n
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rb.stats, fmt.Errorf("node/shards: rebuild: %w", err)
	}
	if rb.stats.Failed > 0 {
		return rb.stats, fmt.Errorf("node/shards: rebuild: %d of %d objects could not be repaired: %w", rb.stats.Failed, rb.stats.Objects, errors.Join(rb.failures...))
	}
	return rb.stats, nil
}

// maxShardSize bounds the shards Rebuild reads: an object of
// MaxObjectSize (erasure's default if unset) split K ways, plus header.
func (f *fleet) maxShardSize() int64 {
	maxObj := f.o.MaxObjectSize
	if maxObj <= 0 {
		maxObj = 256 << 20 // erasure's default
	}
	return (maxObj+int64(f.o.K)-1)/int64(f.o.K) + shardHeaderSize
}

type rebuilder struct {
	f        *fleet
	ro       RebuildOptions
	l        *cachedLayout
	maxShard int64
	// unreachable is written by scan only, before the repairs start.
	unreachable map[ring.NodeID]bool

	mu       sync.Mutex
	stats    RebuildStats
	failures []error
	done     int
	total    int
}

// progress reports; the caller must hold mu or be the only goroutine.
func (rb *rebuilder) progress() {
	if rb.ro.Progress != nil {
		s := rb.stats
		s.Unreachable = slices.Clone(s.Unreachable)
		rb.ro.Progress(RebuildProgress{Done: rb.done, Total: rb.total, Stats: s})
	}
}

// scan lists Self's shards on every placed node: name -> slot -> nodes.
func (rb *rebuilder) scan(ctx context.Context) (map[string][][]ring.NodeID, error) {
	n := rb.f.n()
	locs := map[string][][]ring.NodeID{}
	rb.unreachable = map[ring.NodeID]bool{}
	var mu sync.Mutex
	var fatal []error
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, node := range rb.l.placed {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for i := range n {
				base := rb.f.base(i)
				after := ""
				for {
					names, next, err := rb.f.peers.list(ctx, node, base+rb.ro.Prefix, after, objectstore.DefaultListLimit)
					if err != nil {
						mu.Lock()
						if unreachable(err) && ctx.Err() == nil {
							rb.unreachable[node] = true
						} else {
							fatal = append(fatal, err)
						}
						mu.Unlock()
						return
					}
					mu.Lock()
					for _, st := range names {
						name := strings.TrimPrefix(st, base)
						l := locs[name]
						if l == nil {
							l = make([][]ring.NodeID, n)
							locs[name] = l
						}
						l[i] = append(l[i], node)
					}
					mu.Unlock()
					if next == "" {
						break
					}
					after = next
				}
			}
		})
	}
	wg.Wait()
	for _, node := range rb.l.placed {
		if rb.unreachable[node] {
			rb.stats.Unreachable = append(rb.stats.Unreachable, node)
		}
	}
	if len(fatal) > 0 {
		return nil, fmt.Errorf("node/shards: rebuild: listing shards: %w", errors.Join(fatal...))
	}
	return locs, nil
}

// shardCopy is one copy of a shard on one node.
type shardCopy struct {
	node    ring.NodeID
	data    []byte
	h       shardHeader
	payload []byte
	err     error
}

func (rb *rebuilder) read(ctx context.Context, node ring.NodeID, stored string) shardCopy {
	c := shardCopy{node: node}
	rc, err := rb.f.peers.get(ctx, node, stored, 0, -1)
	if err != nil {
		c.err = err
		return c
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, rb.maxShard+1))
	rb.mu.Lock()
	rb.stats.BytesRead += int64(len(data))
	rb.mu.Unlock()
	if err != nil {
		c.err = fmt.Errorf("node/shards: read %s on %s: %w", stored, node, err)
		return c
	}
	if int64(len(data)) > rb.maxShard {
		c.err = fmt.Errorf("%w: %s on %s is larger than %d bytes", errBadShard, stored, node, rb.maxShard)
		return c
	}
	c.data = data
	c.h, c.payload, c.err = parseShard(data)
	if c.err != nil {
		c.err = fmt.Errorf("%s on %s: %w", stored, node, c.err)
	}
	return c
}

func (rb *rebuilder) write(ctx context.Context, node ring.NodeID, stored string, data []byte) error {
	err := rb.f.peers.put(ctx, node, stored, bytes.NewReader(data), int64(len(data)))
	if err == nil {
		rb.mu.Lock()
		rb.stats.BytesWritten += int64(len(data))
		rb.mu.Unlock()
	}
	return err
}

type outcome int

const (
	healthy outcome = iota
	repaired
	skipped
	failed
)

// object checks and repairs one object and records the outcome.
func (rb *rebuilder) object(ctx context.Context, name string, locs [][]ring.NodeID) {
	out, moved, rebuilt, strays, err := rb.repair(ctx, name, locs)
	rb.mu.Lock()
	defer rb.mu.Unlock()
	switch out {
	case healthy:
		rb.stats.Healthy++
	case repaired:
		rb.stats.Repaired++
	case skipped:
		rb.stats.Skipped++
	case failed:
		rb.stats.Failed++
		if len(rb.failures) < maxReportedFailures {
			rb.failures = append(rb.failures, fmt.Errorf("%s: %w", name, err))
		}
	}
	rb.stats.ShardsMoved += moved
	rb.stats.ShardsRebuilt += rebuilt
	rb.stats.StraysDeleted += strays
	rb.done++
	rb.progress()
}

func (rb *rebuilder) repair(ctx context.Context, name string, locs [][]ring.NodeID) (out outcome, moved, rebuilt, strays int, err error) {
	f := rb.f
	n, k := f.n(), f.o.K
	// The ring of the scan, even if it changed since: the next Rebuild
	// catches up.
	pl, err := rb.l.place(f.o.Self, name, n)
	if err != nil {
		return failed, 0, 0, 0, err
	}
	need := false
	for i, p := range pl {
		if rb.unreachable[p] {
			return skipped, 0, 0, 0, nil
		}
		if !slices.Contains(locs[i], p) || len(locs[i]) > 1 {
			need = true
		}
	}
	if !need {
		return healthy, 0, 0, 0, nil
	}

	// Read one copy of every slot (its node's first), in parallel.
	order := make([][]ring.NodeID, n)
	for i := range n {
		for _, node := range locs[i] {
			if rb.unreachable[node] {
				continue
			}
			if node == pl[i] {
				order[i] = slices.Insert(order[i], 0, node)
			} else {
				order[i] = append(order[i], node)
			}
		}
	}
	first := make([]shardCopy, n)
	var wg sync.WaitGroup
	for i := range n {
		if len(order[i]) == 0 {
			continue
		}
		wg.Go(func() { first[i] = rb.read(ctx, order[i][0], f.base(i)+name) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return failed, 0, 0, 0, err
	}
	// The upload most good shards agree on.
	counts := map[uint64]int{}
	var id uint64
	for i, c := range first {
		if len(order[i]) == 0 || c.err != nil || int(c.h.index) != i || int(c.h.k) != k || int(c.h.m) != f.o.M {
			continue
		}
		counts[c.h.objectID]++
		if counts[c.h.objectID] > counts[id] {
			id = c.h.objectID
		}
	}
	good := make([]*shardCopy, n)
	isGood := func(c *shardCopy, i int) bool {
		return c.err == nil && c.h.objectID == id && int(c.h.index) == i && int(c.h.k) == k && int(c.h.m) == f.o.M
	}
	var problems []string
	for i := range n {
		if len(order[i]) == 0 {
			problems = append(problems, fmt.Sprintf("shard %d: missing", i))
			continue
		}
		if c := &first[i]; isGood(c, i) {
			good[i] = c
			continue
		}
		problems = append(problems, fmt.Sprintf("shard %d on %s: %v", i, first[i].node, describe(first[i], id)))
		for _, node := range order[i][1:] {
			c := rb.read(ctx, node, f.base(i)+name)
			if isGood(&c, i) {
				good[i] = &c
				break
			}
		}
	}
	var payloads = make([][]byte, n)
	var h shardHeader
	have := 0
	for i, c := range good {
		if c != nil {
			payloads[i] = c.payload
			h = c.h
			have++
		}
	}
	if have < k {
		return failed, 0, 0, 0, fmt.Errorf("%d good shards, %d needed (%s)", have, k, strings.Join(problems, "; "))
	}

	// Write every slot that is not good on its node.
	var lost []int
	writes := map[int][]byte{}
	for i := range n {
		switch {
		case good[i] != nil && good[i].node == pl[i]:
		case good[i] != nil:
			writes[i] = good[i].data
			moved++
		default:
			lost = append(lost, i)
		}
	}
	if len(lost) > 0 {
		rebuiltShards, err := rebuildShards(h, payloads, lost)
		if err != nil {
			return failed, 0, 0, 0, err
		}
		for i, data := range rebuiltShards {
			writes[i] = data
		}
		rebuilt = len(lost)
	}
	werrs := make([]error, n)
	for i, data := range writes {
		wg.Go(func() { werrs[i] = rb.write(ctx, pl[i], f.base(i)+name, data) })
	}
	wg.Wait()
	if err := errors.Join(werrs...); err != nil {
		return failed, 0, 0, 0, err
	}

	// Every slot is good on its node: remove the other copies.
	var derrs []error
	for i := range n {
		for _, node := range locs[i] {
			if node == pl[i] || rb.unreachable[node] {
				continue
			}
			if err := f.peers.del(ctx, node, f.base(i)+name); err != nil {
				derrs = append(derrs, err)
				continue
			}
			strays++
		}
	}
	if err := errors.Join(derrs...); err != nil {
		return failed, moved, rebuilt, strays, err
	}
	return repaired, moved, rebuilt, strays, nil
}

func describe(c shardCopy, id uint64) string {
	if c.err != nil {
		return c.err.Error()
	}
	return fmt.Sprintf("shard %d of RS(%d, %d) of upload %016x, want upload %016x", c.h.index, c.h.k, c.h.m, c.h.objectID, id)
}
