package antientropy

import (
	"cmp"
	"slices"

	"github.com/tierkv/tierkv/ring"
)

// Work is a token range this node replicates and its other replicas.
type Work struct {
	Range ring.Range
	// Peers are the range's other replicas, sorted by id.
	Peers []ring.NodeID
}

// Plan returns the ranges self replicates with n replicas on r, each with its
// other replicas, in token order. Adjacent ranges with the same peers are
// merged. Unlike ring.Ring.Ranges, a range's peers are the same all along it,
// so each (range, peer) pair is one repair.
func Plan(r *ring.Ring, self ring.NodeID, n int) []Work {
	var toks []ring.Token
	for _, m := range r.Members() {
		toks = append(toks, m.Tokens...)
	}
	slices.Sort(toks)
	toks = slices.Compact(toks)
	if len(toks) == 0 {
		return nil
	}
	var out []Work
	buf := make([]ring.NodeID, 0, n)
	prev := toks[len(toks)-1]
	for _, t := range toks {
		buf = r.OwnersOfTokenInto(buf[:0], t, n)
		rg := ring.Range{Start: prev, End: t}
		prev = t
		if !slices.Contains(buf, self) {
			continue
		}
		var peers []ring.NodeID
		for _, id := range buf {
			if id != self {
				peers = append(peers, id)
			}
		}
		slices.SortFunc(peers, func(a, b ring.NodeID) int { return cmp.Compare(a, b) })
		if k := len(out) - 1; k >= 0 && out[k].Range.End == rg.Start && slices.Equal(out[k].Peers, peers) {
			out[k].Range.End = rg.End
			continue
		}
		out = append(out, Work{Range: rg, Peers: peers})
	}
	// The first range wraps from the last token: merge it with the last.
	if k := len(out) - 1; k > 0 && out[k].Range.End == out[0].Range.Start && slices.Equal(out[k].Peers, out[0].Peers) {
		out[0].Range.Start = out[k].Range.Start
		out = out[:k]
	}
	return out
}
