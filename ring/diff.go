package ring

import "slices"

// Change is a token range whose replica set differs between two rings.
type Change struct {
	// Range is the token range, maximal: adjacent ranges with the same From
	// and To are merged.
	Range Range
	// From is the range's preference list in the old ring.
	From []NodeID
	// To is the range's preference list in the new ring.
	To []NodeID
}

// Gained returns the members that are replicas of the range in the new ring
// but not in the old one: they must receive its data.
func (c Change) Gained() []NodeID { return setMinus(c.To, c.From) }

// Lost returns the members that were replicas of the range in the old ring
// but are not in the new one: they may drop its data once the gainers have
// it.
func (c Change) Lost() []NodeID { return setMinus(c.From, c.To) }

func setMinus(a, b []NodeID) []NodeID {
	var out []NodeID
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// Diff returns the ranges whose set of n replicas differs between old and
// new, in token order: which ranges move, from whom, to whom. Replica sets
// are compared as sets; a range whose replicas are only reordered is not a
// change. Either ring may be empty.
func Diff(old, new *Ring, n int) []Change {
	bounds := make([]Token, 0, len(old.tokens)+len(new.tokens))
	bounds = append(bounds, old.tokens...)
	bounds = append(bounds, new.tokens...)
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	if len(bounds) == 0 || n <= 0 {
		return nil
	}
	var out []Change
	var from, to []NodeID
	for k, b := range bounds {
		prev := bounds[len(bounds)-1]
		if k > 0 {
			prev = bounds[k-1]
		}
		from = old.OwnersOfTokenInto(from, b, n)
		to = new.OwnersOfTokenInto(to, b, n)
		if sameSet(from, to) {
			continue
		}
		rg := Range{Start: prev, End: b}
		if m := len(out); m > 0 && out[m-1].Range.End == rg.Start &&
			slices.Equal(out[m-1].From, from) && slices.Equal(out[m-1].To, to) {
			out[m-1].Range.End = b
			continue
		}
		out = append(out, Change{Range: rg, From: slices.Clone(from), To: slices.Clone(to)})
	}
	if m := len(out); m > 1 && out[m-1].Range.End == out[0].Range.Start &&
		slices.Equal(out[m-1].From, out[0].From) && slices.Equal(out[m-1].To, out[0].To) {
		out[0].Range.Start = out[m-1].Range.Start
		out = out[:m-1]
	}
	return out
}

func sameSet(a, b []NodeID) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
