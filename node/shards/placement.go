package shards

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/ring"
)

// slotToken is the ring position from which shard slot i of the owner's
// object name is placed: the ring's key hash (ring.KeyToken) of
// owner 0x00 name 0x00 decimal(i). Owner ids and object names contain no
// NUL byte, so the encoding is unambiguous.
//
// NB: this is part of the placement contract, like the ring's own hash:
// changing it moves every shard (reads then depend on the search, and
// Rebuild moves everything).
func slotToken(owner ring.NodeID, name string, i int) ring.Token {
	buf := make([]byte, 0, len(owner)+len(name)+6)
	buf = append(buf, owner...)
	buf = append(buf, 0)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = strconv.AppendInt(buf, int64(i), 10)
	return ring.KeyToken(buf)
}

// layout is the placement view of one ring for one owner. Rings are
// immutable, so a layout is cached by ring pointer.
type layout struct {
	r    *ring.Ring
	self ring.NodeID
	// numPlaced counts every placed member (self and LEAVING ones too):
	// what a full walk of the ring returns.
	numPlaced int
	// placed are the placed members except self, sorted by id: the nodes
	// that may hold shards (listed, searched, scanned).
	placed   []ring.NodeID
	isPlaced map[ring.NodeID]bool
	// eligible are the placed members except self and LEAVING members,
	// sorted by id: the nodes that receive shards.
	eligible []ring.NodeID
	isElig   map[ring.NodeID]bool
	// zone maps an eligible node to a dense zone number.
	zone     map[ring.NodeID]int
	numZones int
}

func newLayout(r *ring.Ring, self ring.NodeID) *layout {
	l := &layout{r: r, self: self, isPlaced: map[ring.NodeID]bool{}, isElig: map[ring.NodeID]bool{}, zone: map[ring.NodeID]int{}}
	if r == nil {
		return l
	}
	all := r.OwnersOfTokenInto(nil, 0, r.Len())
	l.numPlaced = len(all)
	zones := map[string]int{}
	for _, id := range all {
		if id == self {
			continue
		}
		l.placed = append(l.placed, id)
		l.isPlaced[id] = true
		m, _ := r.Member(id)
		if m.State == ring.StateLeaving {
			continue
		}
		l.eligible = append(l.eligible, id)
		l.isElig[id] = true
		z, ok := zones[m.Zone]
		if !ok {
			z = len(zones)
			zones[m.Zone] = z
		}
		l.zone[id] = z
	}
	l.numZones = len(zones)
	slices.Sort(l.placed)
	slices.Sort(l.eligible)
	return l
}

// walk returns up to w members for which keep is true, in the ring's walk
// order from t (clockwise, distinct zones first: ring.OwnersOfTokenInto).
// kept is the number of placed members keep accepts.
func (l *layout) walk(t ring.Token, w int, keep map[ring.NodeID]bool, kept int) []ring.NodeID {
	// The members keep refuses are at most numPlaced-kept, so a walk of
	// w plus that many holds w kept ones (if there are w).
	n := min(l.numPlaced, w+l.numPlaced-kept)
	out := l.r.OwnersOfTokenInto(make([]ring.NodeID, 0, n), t, n)
	out = slices.DeleteFunc(out, func(id ring.NodeID) bool { return !keep[id] })
	return out[:min(w, len(out))]
}

// place returns the nodes of the n shard slots of the owner's object name.
//
// Slot i walks the ring from its own token (slotToken) and takes the first
// eligible node that (1) holds the fewest shards of this object so far
// among all eligible nodes and (2) among those, is in a zone holding the
// fewest shards of this object so far. So the n slots go to n distinct
// nodes when there are at least n eligible ones, spread as evenly over the
// zones as the nodes allow; with fewer nodes the slots wrap around, each
// node holding ⌊n/P⌋ or ⌈n/P⌉ of them. Because every slot has its own
// token, a join or leave moves about n/N of an object's shards, not all
// the slots after the point where the walk changed.
func (l *layout) place(owner ring.NodeID, name string, n int) ([]ring.NodeID, error) {
	if len(l.eligible) == 0 {
		return nil, objectstore.MarkTransient(fmt.Errorf("%w (the ring has %d placed members, none of them another node that is not leaving)", ErrNoPeers, l.numPlaced))
	}
	out := make([]ring.NodeID, n)
	nodeCount := make(map[ring.NodeID]int, n)
	zoneCount := make([]int, l.numZones)
	for i := range n {
		minNode := n + 1
		for _, e := range l.eligible {
			minNode = min(minNode, nodeCount[e])
		}
		minZone := n + 1
		for _, e := range l.eligible {
			if nodeCount[e] == minNode {
				minZone = min(minZone, zoneCount[l.zone[e]])
			}
		}
		t := slotToken(owner, name, i)
		var pick ring.NodeID
		for w := n + 2; pick == ""; w = len(l.eligible) {
			for _, c := range l.walk(t, w, l.isElig, len(l.eligible)) {
				if nodeCount[c] == minNode && zoneCount[l.zone[c]] == minZone {
					pick = c
					break
				}
			}
			if pick == "" && w >= len(l.eligible) {
				// Unreachable: some eligible node meets both minima.
				return nil, fmt.Errorf("node/shards: placement of %s slot %d found no node (bug)", name, i)
			}
		}
		out[i] = pick
		nodeCount[pick]++
		zoneCount[l.zone[pick]]++
	}
	return out, nil
}

// candidates returns up to width other nodes that may hold slot i of name
// when its node (primary) does not: the first placed nodes (LEAVING ones
// included) of the slot's walk. After a ring change a shard is where an
// earlier ring placed it, which is near the front of that walk.
func (l *layout) candidates(owner ring.NodeID, name string, i int, primary ring.NodeID, width int) []ring.NodeID {
	if width <= 0 {
		return nil
	}
	out := l.walk(slotToken(owner, name, i), width+1, l.isPlaced, len(l.placed))
	out = slices.DeleteFunc(out, func(id ring.NodeID) bool { return id == primary })
	return out[:min(width, len(out))]
}

// Placement returns the nodes that hold the k+m shards of self's object
// name on ring r: element i holds shard i. It never includes self, nor a
// member that is LEAVING. See docs/shards.md for the rule.
func Placement(r *ring.Ring, self ring.NodeID, name string, k, m int) ([]ring.NodeID, error) {
	if err := objectstore.ValidateName(name); err != nil {
		return nil, err
	}
	return newLayout(r, self).place(self, name, k+m)
}

// Redundancy returns how many of peers nodes can fail without losing any
// object stored as RS(k, m) shards placed on them: m when there are at
// least k+m peers (one shard per node), less when slots wrap around and a
// node holds several shards of an object (0 if one node holds more than m).
func Redundancy(peers, k, m int) int {
	if peers <= 0 || k < 1 || m < 0 {
		return 0
	}
	perNode := (k + m + peers - 1) / peers
	return m / perNode
}
