package node

import (
	"slices"

	"github.com/tierkv/tierkv/ring"
)

// Placement during topology changes (docs/operations.md). The gossiped ring
// places JOINING and LEAVING members. While any member is in one of those
// states the coordinator uses two views of it, as Cassandra does with its
// pending ranges:
//
//   - the read view: NORMAL and LEAVING members. A joining node is not read
//     from until it has streamed its ranges; a leaving node is read from
//     until it has left.
//   - the future view: NORMAL and JOINING members, the ring once the change
//     completes.
//
// Reads go to the read view's owners. Writes go to the owners of both views
// and, per pending replica (an owner in the future view only), wait for one
// more acknowledgement, so that a write acknowledged during the change is
// on as many replicas of the new ring as of the old one.

// ringViews caches the two views of one gossiped ring.
type ringViews struct {
	base   *ring.Ring
	read   *ring.Ring
	future *ring.Ring // == read when no member is JOINING or LEAVING
}

func (n *Node) views() *ringViews {
	r := n.g.Ring()
	if v := n.ringViews.Load(); v != nil && v.base == r {
		return v
	}
	v := buildViews(r)
	n.ringViews.Store(v)
	return v
}

func buildViews(r *ring.Ring) *ringViews {
	v := &ringViews{base: r, read: r, future: r}
	var read, future []ring.Member
	transitional := false
	for _, m := range r.Members() {
		switch m.State {
		case ring.StateJoining:
			transitional = true
			future = append(future, m)
		case ring.StateLeaving:
			transitional = true
			read = append(read, m)
		default:
			read = append(read, m)
			future = append(future, m)
		}
	}
	if !transitional {
		return v
	}
	var err error
	if v.read, err = ring.New(ptr(r.Options()), read...); err != nil {
		v.read = r
	}
	if v.future, err = ring.New(ptr(r.Options()), future...); err != nil {
		v.future = r
	}
	return v
}

func ptr[T any](v T) *T { return &v }

// readOwners returns key's replicas for reads.
func (n *Node) readOwners(key []byte) []ring.NodeID {
	return n.views().read.OwnersInto(make([]ring.NodeID, 0, n.cfg.ReplicationFactor), key, n.cfg.ReplicationFactor)
}

// writeOwners returns key's replicas for writes: the read view's owners,
// then the pending ones (owners in the future view only).
func (n *Node) writeOwners(key []byte) (owners []ring.NodeID, pending int) {
	v := n.views()
	rf := n.cfg.ReplicationFactor
	owners = v.read.OwnersInto(make([]ring.NodeID, 0, rf+1), key, rf)
	if v.future == v.read {
		return owners, 0
	}
	for _, id := range v.future.Owners(key, rf) {
		if !slices.Contains(owners, id) {
			owners = append(owners, id)
			pending++
		}
	}
	return owners, pending
}
