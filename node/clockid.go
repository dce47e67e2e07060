package node

import (
	"fmt"

	"github.com/tierkv/tierkv/ring"
	"github.com/tierkv/tierkv/ring/gossip"
)

// Clock ids. Every node stamps a cluster-unique clock id (0..63) in the low
// 6 bits of its versions (hlc.go), so that two coordinators stamping in the
// same millisecond with the same logical counter never produce the same
// version (invariant 2's tie-break). Like tokens, the clock id is chosen
// once, at first join — the smallest id no other member (LEFT members
// excepted) holds — persisted in node.json, gossiped in the member
// metadata, and belongs to the node id: a restart keeps it, and a
// replacement that takes over a dead node's id takes it over (learned from
// the peers' view of the id, gossip.Predecessor). Concurrent first joins
// can pick the same id; when two members that have not left hold the same
// clock id, the one with the higher generation (the later start; on a tie
// the larger id) picks a new one and logs it.

// takeIdentity completes the identity after Join: on a first start it
// takes the tokens and clock id of the id's predecessor if peers know one
// (a replacement), else allocates tokens and picks a free clock id; it
// persists them and gossips them.
func (n *Node) takeIdentity(ident *identity) error {
	prev, hasPrev := n.g.Predecessor()
	newTokens := len(ident.Tokens) == 0
	n.replace.mu.Lock()
	replacing := n.replace.active
	n.replace.mu.Unlock()
	if newTokens && replacing && (!hasPrev || len(prev.Tokens) == 0) {
		return fmt.Errorf("node: replace %s: no member of the cluster knows that node's tokens (check the seeds and the id)", n.id)
	}
	if newTokens {
		if hasPrev && len(prev.Tokens) > 0 {
			ident.Tokens = prev.Tokens
			n.log.Info("taking over the tokens of this id's previous holder", "generation", prev.Generation)
		} else {
			tokens, err := n.g.Ring().AllocateTokens(n.id)
			if err != nil {
				return fmt.Errorf("node: allocate tokens: %w", err)
			}
			ident.Tokens = tokens
			// A node joining a cluster that has data streams its
			// ranges before it becomes NORMAL (topology.go).
			for _, m := range n.g.Ring().Members() {
				if m.ID != n.id && len(m.Tokens) > 0 {
					ident.Joining = true
				}
			}
		}
	}
	newClock := ident.ClockID == nil
	if newClock {
		var id uint8
		if hasPrev && prev.HasClockID {
			id = prev.ClockID
			n.log.Info("taking over the clock id of this id's previous holder", "clock_id", id)
		} else {
			var ok bool
			if id, ok = pickClockID(n.g.Members(), n.id); !ok {
				return fmt.Errorf("node: no free clock id: %d other members hold all %d (the HLC tie-break has 6 bits; a cluster has at most %d members)",
					len(n.g.Members())-1, gossip.MaxClockID+1, gossip.MaxClockID+1)
			}
		}
		ident.ClockID = &id
	}
	if newTokens || newClock {
		if err := saveIdentity(n.cfg.DataDir, *ident); err != nil {
			return fmt.Errorf("node: save identity: %w", err)
		}
	}
	n.hlc.SetClockID(*ident.ClockID)
	if self := n.g.Self(); !self.HasClockID || self.ClockID != *ident.ClockID {
		if err := n.g.SetClockID(*ident.ClockID); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	if !newTokens {
		return nil
	}
	if err := n.g.SetTokens(ident.Tokens); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if ident.Joining {
		return nil // stays JOINING until bootstrap has streamed its ranges
	}
	return n.g.SetState(ring.StateNormal)
}

// pickClockID returns the smallest clock id that no member but self holds
// (members that left excepted).
func pickClockID(members []gossip.Member, self ring.NodeID) (uint8, bool) {
	var used [gossip.MaxClockID + 1]bool
	for _, m := range members {
		if m.ID != self && m.State != ring.StateLeft && m.HasClockID {
			used[m.ClockID] = true
		}
	}
	for id, u := range used {
		if !u {
			return uint8(id), true
		}
	}
	return 0, false
}

// yieldsClockID reports whether a member (gen, id) must give up a clock id
// that member o holds too: the later start yields, and on equal
// generations the larger id.
func yieldsClockID(gen uint64, id ring.NodeID, o *gossip.Member) bool {
	return gen > o.Generation || gen == o.Generation && id > o.ID
}

// checkClockID picks a new clock id if another member that has not left
// holds this node's and this node must yield (yieldsClockID). It runs on
// every membership event that carries a clock id.
func (n *Node) checkClockID() {
	n.ident.Lock()
	defer n.ident.Unlock()
	if n.ident.id.ClockID == nil {
		return
	}
	mine := *n.ident.id.ClockID
	members := n.g.Members()
	for i := range members {
		m := &members[i]
		if m.ID == n.id || m.State == ring.StateLeft || !m.HasClockID || m.ClockID != mine ||
			!yieldsClockID(n.ident.id.Generation, n.id, m) {
			continue
		}
		id, ok := pickClockID(members, n.id)
		if !ok {
			n.log.Error("clock id collision and no free clock id: versions stamped by this node and the peer in the same millisecond may tie", "peer", m.ID, "clock_id", mine)
			return
		}
		n.log.Warn("clock id collision: another member holds this node's clock id and started earlier; picked a new one",
			"peer", m.ID, "clock_id", mine, "new_clock_id", id)
		ident := n.ident.id
		ident.ClockID = &id
		if err := saveIdentity(n.cfg.DataDir, ident); err != nil {
			n.log.Error("cannot persist the new clock id; using it until the next restart", "err", err)
		}
		n.ident.id = ident
		n.hlc.SetClockID(id)
		if err := n.g.SetClockID(id); err != nil {
			n.log.Warn("cannot gossip the new clock id", "err", err)
		}
		return
	}
}

// ClockID returns the node's clock id (the tie-break bits of its versions).
func (n *Node) ClockID() uint8 {
	n.ident.Lock()
	defer n.ident.Unlock()
	if n.ident.id.ClockID == nil {
		return 0
	}
	return *n.ident.id.ClockID
}
