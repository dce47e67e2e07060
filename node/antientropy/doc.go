// Package antientropy repairs what reads and hints miss: replicas of a token
// range compare Merkle trees of their engines and copy only the keys that
// differ, newest version winning (DESIGN.md invariant 2), tombstones
// included (invariant 3).
//
// The package is transport-agnostic. A replica's side is a *Local over its
// lsm.DB; the other replica is a Peer, an interface the node implements over
// its internode gRPC (the server side of each call is the same method of the
// node's own *Local, which implements Peer too). MemPeer is the in-process
// Peer used by tests and is the model for the gRPC adapter.
//
//	local, _ := antientropy.NewLocal(db, &antientropy.Options{TombstoneGracePeriod: grace})
//	stats, err := local.Repair(ctx, peer, ranges) // one session with one peer
//
//	s, _ := antientropy.NewScheduler(antientropy.SchedulerOptions{
//		Self: id, Local: local,
//		Plan: func() []antientropy.Work { return antientropy.Plan(currentRing(), id, rf) },
//		Peer: dialPeer,
//	})
//	s.Start()                // a pass every Interval
//	stats, err = s.Trigger(ctx) // the admin endpoint
//	m := s.Metrics()         // progress and counters, for Prometheus
//
// # Trees
//
// The engine iterates in key order, but keys are placed by token
// (ring.KeyToken). A session therefore scans the engine once (newest version
// per key, tombstones included) and adds each key to the tree of the range
// its token falls in. A tree of depth d splits its range (Start, End] into
// 2^d equal token sub-ranges, its leaves (LeafOf). A leaf's hash is the sum
// modulo 2^64 of the EntryHash of its keys, so that it does not depend on
// visiting order:
//
//	EntryHash = XXH64( uvarint(len(key)) | key | version u64 LE | deleted u8 | XXH64(value) u64 LE )
//	leaf      = Σ EntryHash (mod 2^64), 0 when empty
//	inner     = XXH64( left u64 LE | right u64 LE )
//
// Nodes are numbered in heap order (NodeIndex). These functions are part of
// the replica protocol (TestLeafOf, TestEntryHashContract pin them).
//
// # Protocol
//
//  1. Prepare: the peer builds its trees of the session's ranges (one scan)
//     and returns their roots; ranges whose roots match cost one hash each.
//  2. Hashes: the initiator descends level by level into the children of
//     differing nodes only: O(differences × depth) hashes.
//  3. LeafDigests: for the differing leaves, both sides list (key, version,
//     deleted, value hash) of every key in them (one scan per batch of
//     leaves), never values. AppendDigests/DecodeDigests is a compact,
//     checksummed wire encoding for them.
//  4. Fetch the keys where the peer is newer (or only the peer has the key),
//     Push those where the initiator is; both sides apply with lsm.Sync and
//     keep the highest version. Only differing keys travel.
//
// Equal versions with different contents (an HLC tie-break collision) cannot
// be settled by versions; they are counted as Stats.Conflicts and left.
//
// # Grace period
//
// The engine purges a tombstone only after TombstoneGracePeriod. Within the
// grace every replica that saw a delete still holds its tombstone, and the
// tombstone's version is above the value it deleted, so a replica that missed
// the delete for less than the grace receives the tombstone and nothing can
// resurrect the key: versions decide. Beyond the grace, a replica may have
// purged the tombstone and hold nothing, while a replica that was away longer
// still holds the older value; copying that value would resurrect the key.
// Such a value is necessarily older than the grace (it is older than its
// tombstone), so the rule is:
//
//	An entry whose version is older than TombstoneGracePeriod − GraceMargin
//	is never copied onto a replica that holds no version of its key.
//
// Both sides enforce it: the initiator does not stream such entries
// (Stats.SkippedPastGrace), and Push and the apply of fetched entries check,
// at apply time, that the receiving engine holds the key. Copying onto a
// replica that holds an older version is always safe (that replica has no
// purged tombstone above it). The cost: a replica that lost old data by other
// means (a disk, a failed bootstrap) does not get it back from anti-entropy;
// join/replace streaming must copy it. GraceMargin absorbs clock skew.
// Tombstones past the grace travel only to replicas holding the key, which is
// when they matter.
//
// # Cost and bounds
//
// Per session and side: one scan to build trees, one scan per LeafDigests
// batch (MaxLeavesPerCall), trees of 2^(Depth+1) × 8 bytes per range. The
// Limiter (bytes per second) covers the digests received and the entries
// fetched and pushed; scans are local reads and are not limited. Answers are
// bounded: LeafDigests by MaxDigestBytes (ErrTooLarge; the initiator splits
// its request), Fetch and Push by MaxBatchKeys and MaxBatchBytes.
package antientropy
