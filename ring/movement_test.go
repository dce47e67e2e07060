package ring

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"testing"
)

const movementKeys = 1_000_000

func movementTokens() []Token {
	toks := make([]Token, movementKeys)
	var k [8]byte
	for i := range toks {
		binary.BigEndian.PutUint64(k[:], uint64(i))
		toks[i] = KeyToken(k[:])
	}
	return toks
}

type movement struct {
	primary, replica float64 // fractions moved
}

// measureMovement places every key on both rings and checks that keys move
// only to (join) or from (leave) the changed member. It returns the fraction
// of keys whose primary changed and the fraction of (key, replica)
// assignments that changed.
func measureMovement(t *testing.T, toks []Token, before, after *Ring, changed NodeID, joining bool) movement {
	t.Helper()
	const rf = 3
	var a, b []NodeID
	primMoved, replMoved := 0, 0
	for _, tk := range toks {
		a = before.OwnersOfTokenInto(a, tk, rf)
		b = after.OwnersOfTokenInto(b, tk, rf)
		if a[0] != b[0] {
			primMoved++
			if joining && b[0] != changed || !joining && a[0] != changed {
				t.Fatalf("primary of token %#x moved %s -> %s, not involving %s", uint64(tk), a[0], b[0], changed)
			}
		}
		for _, x := range b {
			if !slices.Contains(a, x) {
				replMoved++
				if joining && x != changed {
					t.Fatalf("token %#x: %s gained a replica on join of %s", uint64(tk), x, changed)
				}
			}
		}
		for _, x := range a {
			if !slices.Contains(b, x) && !joining && x != changed {
				t.Fatalf("token %#x: %s lost a replica on leave of %s", uint64(tk), x, changed)
			}
		}
	}
	return movement{
		primary: float64(primMoved) / float64(len(toks)),
		replica: float64(replMoved) / float64(len(toks)*rf),
	}
}

// TestMovement measures, with a million keys, how much data moves when a
// member joins or leaves: the fraction must be within 10% of the ideal 1/N
// (N counting the changed member), both for primaries and for RF=3 replica
// assignments, and keys may only move to the joiner or from the leaver.
func TestMovement(t *testing.T) {
	toks := movementTokens()
	for _, n := range []int{10, 100} {
		base := grownRings(t)[n]
		// Join.
		joined := join(t, base, "joiner", "")
		m := measureMovement(t, toks, base, joined, "joiner", true)
		ideal := 1 / float64(n+1)
		t.Logf("join  %3d->%3d: primary moved %.4f, replicas moved %.4f, ideal %.4f (ratios %.3f, %.3f)",
			n, n+1, m.primary, m.replica, ideal, m.primary/ideal, m.replica/ideal)
		checkIdeal(t, fmt.Sprintf("join %d", n), m, ideal)
		// Leave: three members spread over the ring's history (the first
		// member, one from the middle, the last joiner).
		for _, i := range []int{1, n / 2, n} {
			id := NodeID(fmt.Sprintf("n%03d", i))
			left := base.Remove(id)
			m := measureMovement(t, toks, base, left, id, false)
			ideal := 1 / float64(n)
			t.Logf("leave %3d->%3d (%s): primary moved %.4f, replicas moved %.4f, ideal %.4f (ratios %.3f, %.3f)",
				n, n-1, id, m.primary, m.replica, ideal, m.primary/ideal, m.replica/ideal)
			checkIdeal(t, fmt.Sprintf("leave %d (%s)", n, id), m, ideal)
		}
	}
}

func checkIdeal(t *testing.T, what string, m movement, ideal float64) {
	t.Helper()
	if math.Abs(m.primary/ideal-1) > 0.10 {
		t.Errorf("%s: primary moved %.4f, not within 10%% of %.4f", what, m.primary, ideal)
	}
	if math.Abs(m.replica/ideal-1) > 0.10 {
		t.Errorf("%s: replicas moved %.4f, not within 10%% of %.4f", what, m.replica, ideal)
	}
}
