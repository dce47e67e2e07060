// Package shards keeps the Reed-Solomon shards of a node's cold tables on
// its peers: tiering's fallback store in a cluster (DESIGN.md; the
// protocol, placement and rebuild are described in docs/shards.md).
//
// Every node runs a Server, the internode Shards gRPC service
// (api/shard/v1) over a local bucket, and builds, for its own objects, an
// erasure-coded bucket over its peers:
//
//	srv := shards.NewServer(localBucket, shards.ServerOptions{})
//	srv.Register(grpcServer)
//
//	fallback, err := shards.NewErasure(shards.Options{
//		Self: id, Ring: currentRing, Conn: peerConn, K: 4, M: 2,
//	})
//	// tiering.Options{..., Fallback: fallback}
//
//	stats, err := shards.Rebuild(ctx, opts, shards.RebuildOptions{})
//
// NewErasure hands K+M slot buckets to objectstore/erasure: slot i stores
// shard i of object X on the node Placement(ring, Self, X)[i] (never Self,
// distinct nodes when the ring has enough), under the name
// "<Self>/<i>/X" in that node's shard store. Reads of a shard missing
// from its node also ask the nodes where earlier rings placed it; Rebuild
// moves such shards home and reconstructs lost ones.
//
// The package does not import the node package: the node injects the ring
// and the connections.
package shards
