package ring

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// maxBalance is the bound on the largest member's share over the
// mean share.
const maxBalance = 1.10

type balanceRow struct {
	nodes                  int
	replMax, replMin       float64 // RF=3 replica share / mean
	primMax, primMin       float64 // primary share / mean
	worstReplN, worstPrimN int
}

// grown caches the rings of one growth from 1 to 200 members at the default
// V: the balance and movement tests share it (allocation is the expensive
// part under the race detector).
var grown struct {
	once  sync.Once
	rings []*Ring // rings[n] has n members
}

func grownRings(tb testing.TB) []*Ring {
	grown.once.Do(func() {
		grown.rings = []*Ring{nil}
		growRing(tb, nil, 200, func(r *Ring) { grown.rings = append(grown.rings, r) })
	})
	if len(grown.rings) != 201 {
		tb.Fatal("growth failed")
	}
	return grown.rings
}

// growAndMeasure grows a ring to maxNodes at the given V and returns the
// balance after every join from 3 members on.
func growAndMeasure(tb testing.TB, v, maxNodes int) []balanceRow {
	var rows []balanceRow
	measure := func(r *Ring) {
		if r.Len() < 3 {
			return
		}
		row := balanceRow{nodes: r.Len()}
		row.replMax, row.replMin = Balance(r.Ownership(3))
		row.primMax, row.primMin = Balance(r.Ownership(1))
		rows = append(rows, row)
	}
	if v == DefaultVNodes && maxNodes == 200 {
		for _, r := range grownRings(tb)[1:] {
			measure(r)
		}
		return rows
	}
	growRing(tb, &Options{VNodes: v}, maxNodes, measure)
	return rows
}

func worstOf(rows []balanceRow) (w balanceRow) {
	w.replMin, w.primMin = 2, 2
	for _, r := range rows {
		if r.replMax > w.replMax {
			w.replMax, w.worstReplN = r.replMax, r.nodes
		}
		if r.primMax > w.primMax {
			w.primMax, w.worstPrimN = r.primMax, r.nodes
		}
		w.replMin = min(w.replMin, r.replMin)
		w.primMin = min(w.primMin, r.primMin)
	}
	return w
}

// TestOwnershipBalance grows a cluster from 1 to 200 members at the default V
// and asserts, after every single join from 3 members on, that the largest
// member's share is at most 1.10 times the mean share, both for the RF=3
// replica share (the share of data the issue bounds) and for the primary
// share. It prints the table for 3, 5, 10, 50, 100 and 200 members.
func TestOwnershipBalance(t *testing.T) {
	rows := growAndMeasure(t, DefaultVNodes, 200)
	var b strings.Builder
	fmt.Fprintf(&b, "V=%d\n| nodes | RF=3 max/mean | RF=3 min/mean | primary max/mean | primary min/mean |\n|---|---|---|---|---|\n", DefaultVNodes)
	for _, r := range rows {
		if slices.Contains([]int{3, 5, 10, 50, 100, 200}, r.nodes) {
			fmt.Fprintf(&b, "| %d | %.4f | %.4f | %.4f | %.4f |\n", r.nodes, r.replMax, r.replMin, r.primMax, r.primMin)
		}
		if r.replMax > maxBalance {
			t.Errorf("%d nodes: RF=3 replica share max/mean %.4f > %.2f", r.nodes, r.replMax, maxBalance)
		}
		if r.primMax > maxBalance {
			t.Errorf("%d nodes: primary share max/mean %.4f > %.2f", r.nodes, r.primMax, maxBalance)
		}
	}
	w := worstOf(rows)
	fmt.Fprintf(&b, "worst over 3..200: RF=3 max %.4f (at %d) min %.4f; primary max %.4f (at %d) min %.4f\n",
		w.replMax, w.worstReplN, w.replMin, w.primMax, w.worstPrimN, w.primMin)
	t.Log("\n" + b.String())
}

// TestChooseDefaultVNodes is the measurement behind DefaultVNodes: the worst
// balance over every cluster size from 3 to 200 for several V. It asserts
// that the default meets the bound; set TIERKV_RING_SWEEP=1 to include
// V = 4, 32 and 64 (slow).
func TestChooseDefaultVNodes(t *testing.T) {
	vs := []int{DefaultVNodes / 2, DefaultVNodes}
	if os.Getenv("TIERKV_RING_SWEEP") != "" {
		vs = []int{4, 8, 16, 32, 64}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| V | worst RF=3 max/mean (n) | RF=3 min/mean | worst primary max/mean (n) | primary min/mean |\n|---|---|---|---|---|\n")
	for _, v := range vs {
		w := worstOf(growAndMeasure(t, v, 200))
		fmt.Fprintf(&b, "| %d | %.4f (%d) | %.4f | %.4f (%d) | %.4f |\n", v, w.replMax, w.worstReplN, w.replMin, w.primMax, w.worstPrimN, w.primMin)
		if v == DefaultVNodes && (w.replMax > maxBalance || w.primMax > maxBalance) {
			t.Errorf("default V=%d does not meet the bound", v)
		}
	}
	t.Log(b.String())
}
