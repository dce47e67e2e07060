// Package ring is tierkv's pure placement code: a consistent-hash token ring
// with virtual nodes, zone-aware preference lists, range queries and a
// replication-aware token allocator.
//
// The package is deterministic: it starts no goroutines, does no I/O and
// reads no clock. The Go SDK imports it so that clients and servers place keys
// identically (DESIGN.md invariant 6, "one placement function").
//
// # Placement contract
//
// A key's token is the 64-bit xxHash (XXH64, seed 0) of its bytes, see
// [KeyToken]. Every member owns a fixed set of 64-bit tokens. A token T
// owns the half-open range (P, T], where P is the previous token on the
// ring; the ring wraps around at 2^64. The preference list of a key is found
// by walking clockwise from the first token >= the key's token and collecting
// distinct members: while fewer zones than the requested replicas have been
// used, a member whose zone is already in the list is skipped; once every
// zone is used, the skipped members are taken in clockwise order. Both the
// hash and the walk are part of the placement contract: changing either
// moves data and must be treated like an on-disk format change.
//
// # Tokens
//
// A member's tokens are chosen once, when it first joins, by
// [Ring.AllocateTokens], and are gossiped with its metadata from then on. A
// replacement node that takes over a dead node's id takes over its tokens and
// therefore exactly its ranges. The allocator is greedy and replication-aware
// (in the spirit of Cassandra's CASSANDRA-7032 allocator): each new token is
// placed in the range, and at the point inside it, that most reduces the
// squared deviation of every member's replica share (at the configured
// replication factor) and primary share from the ideal. See docs/ring.md for
// the measured balance and the choice of the default number of virtual nodes.
//
// # Example
//
//	r, _ := ring.New(nil)
//	for _, id := range []ring.NodeID{"a", "b", "c", "d"} {
//		toks, _ := r.AllocateTokens(id)
//		r, _ = r.Add(ring.Member{ID: id, State: ring.StateNormal, Tokens: toks})
//	}
//	var buf [3]ring.NodeID
//	replicas := r.OwnersInto(buf[:0], []byte("user/42"), 3)
//
// Members in state [StateLeft] are not placed: the membership layer keeps
// them only to remember that they left. Every other state is placed; deciding
// whether a replica that is down or still joining should serve a request is
// the node layer's job.
package ring
