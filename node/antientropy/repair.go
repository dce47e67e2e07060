package antientropy

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/ring"
)

// Stats describes what a repair did (JSON: the admin endpoint).
type Stats struct {
	// Ranges is the number of ranges compared; RangesInSync those whose
	// roots matched; RangesFailed those skipped after an error (ErrNoTree).
	Ranges       int `json:"ranges"`
	RangesInSync int `json:"ranges_in_sync"`
	RangesFailed int `json:"ranges_failed"`
	// HashesReceived counts the tree hashes the peer sent, roots included.
	HashesReceived int `json:"hashes_received"`
	// LeavesDiffering counts leaves whose hashes differed.
	LeavesDiffering int `json:"leaves_differing"`
	// DigestsReceived counts the key digests the peer sent.
	DigestsReceived int `json:"digests_received"`
	// KeysFetched and KeysPushed count keys copied from and to the peer;
	// BytesFetched and BytesPushed their keys and values (plus 9 bytes of
	// version and flag each).
	KeysFetched  int   `json:"keys_fetched"`
	KeysPushed   int   `json:"keys_pushed"`
	BytesFetched int64 `json:"bytes_fetched"`
	BytesPushed  int64 `json:"bytes_pushed"`
	// SkippedPastGrace counts keys not repaired because one replica holds
	// no version and the other's is older than the grace period.
	SkippedPastGrace int `json:"skipped_past_grace"`
	// Conflicts counts keys with equal versions and different contents,
	// which versions cannot settle.
	Conflicts int `json:"conflicts"`
}

// Add adds o to s.
func (s *Stats) Add(o Stats) {
	s.Ranges += o.Ranges
	s.RangesInSync += o.RangesInSync
	s.RangesFailed += o.RangesFailed
	s.HashesReceived += o.HashesReceived
	s.LeavesDiffering += o.LeavesDiffering
	s.DigestsReceived += o.DigestsReceived
	s.KeysFetched += o.KeysFetched
	s.KeysPushed += o.KeysPushed
	s.BytesFetched += o.BytesFetched
	s.BytesPushed += o.BytesPushed
	s.SkippedPastGrace += o.SkippedPastGrace
	s.Conflicts += o.Conflicts
}

// EntrySize is the size an entry counts for in batch bounds and rate
// limits: key, value, and 9 bytes of version and flag.
func EntrySize(e lsm.Entry) int { return len(e.Key) + len(e.Value) + 9 }

func digestSize(d KeyDigest) int { return len(d.Key) + 17 }

// Repair makes this replica and peer agree on ranges, which both replicate:
//
//  1. ask the peer to Prepare its trees and build the local ones (one scan
//     each); ranges whose roots match are done (one hash per range);
//  2. descend level by level into the children of differing nodes only,
//     asking the peer for just those hashes (O(differences × depth));
//  3. for the differing leaves, compare per-key digests (no values) from
//     both sides;
//  4. Fetch the keys where the peer is newer and Push those where this
//     replica is newer, in batches, through the rate limiter; both sides
//     keep the highest version.
//
// Entries older than the grace period are not copied onto a replica that
// holds no version of the key (doc.go, "Grace period"). Ranges must be
// disjoint. A range whose tree the peer lost (ErrNoTree) is counted in
// RangesFailed and skipped; any other error ends the repair, returning the
// stats so far.
func (l *Local) Repair(ctx context.Context, peer Peer, ranges []ring.Range) (Stats, error) {
	st := Stats{Ranges: len(ranges)}
	depth := l.opts.Depth
	if err := validateRanges(ranges); err != nil {
		return st, err
	}
	// The peer first: if it is unreachable, no scan was wasted.
	roots, err := peer.Prepare(ctx, ranges, depth)
	if err != nil {
		return st, fmt.Errorf("antientropy: prepare: %w", err)
	}
	mine, err := l.BuildTrees(ctx, ranges, depth)
	if err != nil {
		return st, err
	}
	if len(roots) != len(ranges) {
		return st, fmt.Errorf("antientropy: peer returned %d roots for %d ranges", len(roots), len(ranges))
	}
	st.HashesReceived += len(roots)
	var sets []LeafSet
	for i, t := range mine {
		if roots[i] == t.Root() {
			st.RangesInSync++
			continue
		}
		leaves, n, err := l.diffTree(ctx, peer, t)
		st.HashesReceived += n
		if errors.Is(err, ErrNoTree) {
			st.RangesFailed++
			continue
		}
		if err != nil {
			return st, err
		}
		st.LeavesDiffering += len(leaves)
		sets = append(sets, LeafSet{Range: t.r, Leaves: leaves})
	}
	// Batch the differing leaves, at most MaxLeavesPerCall per call.
	for len(sets) > 0 {
		var batch []LeafSet
		room := l.opts.MaxLeavesPerCall
		for len(sets) > 0 && room > 0 {
			s := sets[0]
			if len(s.Leaves) <= room {
				batch = append(batch, s)
				room -= len(s.Leaves)
				sets = sets[1:]
				continue
			}
			batch = append(batch, LeafSet{Range: s.Range, Leaves: s.Leaves[:room]})
			sets[0].Leaves = s.Leaves[room:]
			room = 0
		}
		if err := l.repairLeavesSplit(ctx, peer, depth, batch, &st); err != nil {
			return st, err
		}
	}
	return st, nil
}

// diffTree returns the leaves where the peer's tree of t's range differs from
// t, and the number of hashes received.
func (l *Local) diffTree(ctx context.Context, peer Peer, t *Tree) (leaves []int, received int, _ error) {
	frontier := []NodeIndex{0} // differing nodes of the current level
	for level := 0; level < t.depth && len(frontier) > 0; level++ {
		children := make([]NodeIndex, 0, 2*len(frontier))
		for _, n := range frontier {
			children = append(children, 2*n+1, 2*n+2)
		}
		var next []NodeIndex
		for len(children) > 0 {
			c := children[:min(len(children), l.opts.MaxNodesPerCall)]
			children = children[len(c):]
			hs, err := peer.Hashes(ctx, t.r, c)
			if err != nil {
				return nil, received, fmt.Errorf("antientropy: hashes of %v: %w", t.r, err)
			}
			if len(hs) != len(c) {
				return nil, received, fmt.Errorf("antientropy: peer returned %d hashes for %d nodes", len(hs), len(c))
			}
			received += len(hs)
			for i, n := range c {
				if h, _ := t.Hash(n); h != hs[i] {
					next = append(next, n)
				}
			}
		}
		frontier = next
	}
	base := NodeIndex(t.leafBase())
	for _, n := range frontier {
		leaves = append(leaves, int(n-base))
	}
	return leaves, received, nil
}

// repairLeavesSplit is repairLeaves, halving the batch while the peer (or
// this replica) finds the digests too large.
func (l *Local) repairLeavesSplit(ctx context.Context, peer Peer, depth int, sets []LeafSet, st *Stats) error {
	err := l.repairLeaves(ctx, peer, depth, sets, st)
	if !errors.Is(err, ErrTooLarge) {
		return err
	}
	var leaves []LeafSet // one leaf each
	for _, s := range sets {
		for _, lf := range s.Leaves {
			leaves = append(leaves, LeafSet{Range: s.Range, Leaves: []int{lf}})
		}
	}
	if len(leaves) <= 1 {
		return err // one leaf is too large: deepen the trees
	}
	half := len(leaves) / 2
	if err := l.repairLeavesSplit(ctx, peer, depth, mergeLeafSets(leaves[:half]), st); err != nil {
		return err
	}
	return l.repairLeavesSplit(ctx, peer, depth, mergeLeafSets(leaves[half:]), st)
}

// mergeLeafSets merges adjacent single-leaf sets of the same range.
func mergeLeafSets(sets []LeafSet) []LeafSet {
	var out []LeafSet
	for _, s := range sets {
		if k := len(out) - 1; k >= 0 && out[k].Range == s.Range {
			out[k].Leaves = append(out[k].Leaves, s.Leaves...)
			continue
		}
		out = append(out, LeafSet{Range: s.Range, Leaves: append([]int(nil), s.Leaves...)})
	}
	return out
}

// repairLeaves compares the digests of a batch of leaves and streams the
// differing keys.
func (l *Local) repairLeaves(ctx context.Context, peer Peer, depth int, sets []LeafSet, st *Stats) error {
	theirs, err := peer.LeafDigests(ctx, depth, sets)
	if err != nil {
		return fmt.Errorf("antientropy: leaf digests: %w", err)
	}
	st.DigestsReceived += len(theirs)
	n := 0
	for _, d := range theirs {
		n += digestSize(d)
	}
	if err := waitN(ctx, l.opts.Limiter, l.opts.Clock, n); err != nil {
		return err
	}
	ours, err := l.LeafDigests(ctx, depth, sets)
	if err != nil {
		return err
	}
	var fetch, push [][]byte
	i, j := 0, 0
	for i < len(ours) || j < len(theirs) {
		var c int
		switch {
		case i == len(ours):
			c = 1
		case j == len(theirs):
			c = -1
		default:
			c = bytes.Compare(ours[i].Key, theirs[j].Key)
		}
		switch {
		case c < 0: // only we hold the key
			if l.pastGrace(ours[i].Version) {
				st.SkippedPastGrace++
			} else {
				push = append(push, ours[i].Key)
			}
			i++
		case c > 0: // only the peer holds it
			if l.pastGrace(theirs[j].Version) {
				st.SkippedPastGrace++
			} else {
				fetch = append(fetch, theirs[j].Key)
			}
			j++
		default:
			o, t := ours[i], theirs[j]
			switch {
			case o.Version > t.Version:
				push = append(push, o.Key)
			case o.Version < t.Version:
				fetch = append(fetch, t.Key)
			case o.Deleted != t.Deleted || o.ValueHash != t.ValueHash:
				st.Conflicts++
			}
			i++
			j++
		}
	}
	if err := l.fetchKeys(ctx, peer, fetch, st); err != nil {
		return err
	}
	return l.pushKeys(ctx, peer, push, st)
}

func (l *Local) fetchKeys(ctx context.Context, peer Peer, keys [][]byte, st *Stats) error {
	for len(keys) > 0 {
		batch := keys[:min(len(keys), l.opts.MaxBatchKeys)]
		entries, done, err := peer.Fetch(ctx, batch)
		if err != nil {
			return fmt.Errorf("antientropy: fetch: %w", err)
		}
		if done < 1 || done > len(batch) || len(entries) > done {
			return fmt.Errorf("antientropy: peer answered %d of %d keys with %d entries", done, len(batch), len(entries))
		}
		keys = keys[done:]
		n := 0
		for _, e := range entries {
			n += EntrySize(e)
		}
		if err := waitN(ctx, l.opts.Limiter, l.opts.Clock, n); err != nil {
			return err
		}
		skipped, err := l.apply(ctx, entries)
		if err != nil {
			return err
		}
		st.SkippedPastGrace += skipped
		st.KeysFetched += len(entries) - skipped
		st.BytesFetched += int64(n)
	}
	return nil
}

func (l *Local) pushKeys(ctx context.Context, peer Peer, keys [][]byte, st *Stats) error {
	var batch []lsm.Entry
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := waitN(ctx, l.opts.Limiter, l.opts.Clock, size); err != nil {
			return err
		}
		if err := peer.Push(ctx, batch); err != nil {
			return fmt.Errorf("antientropy: push: %w", err)
		}
		st.KeysPushed += len(batch)
		st.BytesPushed += int64(size)
		batch, size = batch[:0], 0
		return nil
	}
	for _, k := range keys {
		e, err := l.db.GetEntry(k)
		if errors.Is(err, lsm.ErrNotFound) {
			continue // purged since the digest
		}
		if err != nil {
			return fmt.Errorf("antientropy: push: %w", err)
		}
		if len(batch) > 0 && (len(batch) == l.opts.MaxBatchKeys || size+EntrySize(e) > l.opts.MaxBatchBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, e)
		size += EntrySize(e)
	}
	return flush()
}
