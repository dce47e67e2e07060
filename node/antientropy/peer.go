package antientropy

import (
	"context"
	"sync/atomic"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/ring"
)

// KeyDigest describes a key's newest version without its value.
type KeyDigest struct {
	Key     []byte
	Version uint64
	Deleted bool
	// ValueHash is XXH64 of the value (of nil for a tombstone). Two
	// replicas with the same version but different values (an HLC
	// tie-break collision, docs/node.md) are reported as conflicts,
	// which repair cannot settle.
	ValueHash uint64
}

// LeafSet names leaves of the tree of one range.
type LeafSet struct {
	Range  ring.Range
	Leaves []int
}

// Peer is the other replica of a repair, as the initiator sees it. The node
// implements it over its internode gRPC (the server side calls the same
// methods of its own *Local, which implements Peer); MemPeer implements it in
// process. Methods may be called concurrently for different sessions, and
// must not keep or modify their slice arguments; returned slices belong to
// the caller. Any error aborts the part of the session that needed the call.
type Peer interface {
	// Prepare builds the peer's trees of ranges at depth in one scan of its
	// engine, keeps them for the session's Hashes calls (Options.TreeTTL)
	// and returns their root hashes, in the order of ranges. Ranges must
	// be disjoint (ErrInvalidRanges).
	Prepare(ctx context.Context, ranges []ring.Range, depth int) ([]uint64, error)
	// Hashes returns the hashes of the given nodes of the tree Prepare
	// built for r, in order. ErrNoTree: no such tree (expired, evicted or
	// never prepared). ErrInvalidRequest: an index outside the tree.
	Hashes(ctx context.Context, r ring.Range, nodes []NodeIndex) ([]uint64, error)
	// LeafDigests returns the digests of every key (tombstones included)
	// in the given leaves of trees of the given depth, sorted by key. It
	// reads the engine as it is now (one scan), not the prepared tree.
	// ErrTooLarge: the answer would exceed Options.MaxDigestBytes (as
	// encoded by AppendDigests); the caller asks for fewer leaves.
	LeafDigests(ctx context.Context, depth int, sets []LeafSet) ([]KeyDigest, error)
	// Fetch returns the newest version of each of keys[:done] the peer
	// holds, tombstones included, in the order of keys; keys it holds no
	// version of are left out. It answers at least one key (done >= 1 for
	// a non-empty request) and stops early (done < len(keys)) once the
	// answer holds Options.MaxBatchBytes; the caller asks again for the
	// rest.
	Fetch(ctx context.Context, keys [][]byte) (entries []lsm.Entry, done int, err error)
	// Push applies entries durably, keeping the highest version of each
	// key (lsm.DB.Apply), except entries older than the grace period for
	// keys the peer holds no version of (doc.go, "Grace period"). It
	// returns after the WAL fsync.
	Push(ctx context.Context, entries []lsm.Entry) error
}

// MemPeer is a Peer in process: it calls a *Local (typically over another
// lsm.DB), copying arguments and results as a network would, and counts the
// calls and items. It is the model for the node's gRPC adapter. Counters are
// safe for concurrent use.
type MemPeer struct {
	l *Local

	// PrepareCalls ... PushCalls count calls; the item counters count
	// hashes returned (roots included), digests returned, and entries
	// fetched and pushed.
	PrepareCalls, HashesCalls, LeafDigestsCalls, FetchCalls, PushCalls atomic.Int64
	HashesSent, DigestsSent, EntriesFetched, EntriesPushed             atomic.Int64
}

var _ Peer = (*MemPeer)(nil)
var _ Peer = (*Local)(nil)

// NewMemPeer returns a MemPeer serving l.
func NewMemPeer(l *Local) *MemPeer { return &MemPeer{l: l} }

// Prepare is part of the Peer interface.
func (p *MemPeer) Prepare(ctx context.Context, ranges []ring.Range, depth int) ([]uint64, error) {
	p.PrepareCalls.Add(1)
	roots, err := p.l.Prepare(ctx, append([]ring.Range(nil), ranges...), depth)
	p.HashesSent.Add(int64(len(roots)))
	return roots, err
}

// Hashes is part of the Peer interface.
func (p *MemPeer) Hashes(ctx context.Context, r ring.Range, nodes []NodeIndex) ([]uint64, error) {
	p.HashesCalls.Add(1)
	h, err := p.l.Hashes(ctx, r, append([]NodeIndex(nil), nodes...))
	p.HashesSent.Add(int64(len(h)))
	return h, err
}

// LeafDigests is part of the Peer interface.
func (p *MemPeer) LeafDigests(ctx context.Context, depth int, sets []LeafSet) ([]KeyDigest, error) {
	p.LeafDigestsCalls.Add(1)
	cp := make([]LeafSet, len(sets))
	for i, s := range sets {
		cp[i] = LeafSet{Range: s.Range, Leaves: append([]int(nil), s.Leaves...)}
	}
	d, err := p.l.LeafDigests(ctx, depth, cp)
	if err != nil {
		return nil, err
	}
	// Through the wire encoding, as the gRPC adapter would.
	d, err = DecodeDigests(AppendDigests(nil, d))
	p.DigestsSent.Add(int64(len(d)))
	return d, err
}

// Fetch is part of the Peer interface.
func (p *MemPeer) Fetch(ctx context.Context, keys [][]byte) ([]lsm.Entry, int, error) {
	p.FetchCalls.Add(1)
	cp := make([][]byte, len(keys))
	for i, k := range keys {
		cp[i] = append([]byte(nil), k...)
	}
	e, done, err := p.l.Fetch(ctx, cp)
	p.EntriesFetched.Add(int64(len(e)))
	return e, done, err
}

// Push is part of the Peer interface.
func (p *MemPeer) Push(ctx context.Context, entries []lsm.Entry) error {
	p.PushCalls.Add(1)
	cp := make([]lsm.Entry, len(entries))
	for i, e := range entries {
		cp[i] = lsm.Entry{Key: append([]byte(nil), e.Key...), Value: append([]byte(nil), e.Value...), Version: e.Version, Deleted: e.Deleted}
		if e.Deleted {
			cp[i].Value = nil
		}
	}
	p.EntriesPushed.Add(int64(len(entries)))
	return p.l.Push(ctx, cp)
}
