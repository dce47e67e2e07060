package gossip

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/ring"
)

// testConfig is LocalConfig tightened for in-process clusters on a
// MemNetwork.
func testConfig(id string, n *MemNetwork) *Config {
	c := LocalConfig()
	c.ID = ring.NodeID(id)
	c.RPCAddr = id + ":7000"
	c.Transport = n.NewTransport(id)
	ml := c.Memberlist
	ml.GossipInterval = 50 * time.Millisecond
	ml.RetransmitMult = 4 // memberlist's LAN default; the local profile's 2 loses joins
	ml.ProbeInterval = 200 * time.Millisecond
	ml.ProbeTimeout = 100 * time.Millisecond
	ml.SuspicionMult = 2
	ml.PushPullInterval = 2 * time.Second
	ml.GossipToTheDeadTime = 3 * time.Second
	ml.TCPTimeout = 500 * time.Millisecond
	c.HeartbeatInterval = 100 * time.Millisecond
	c.ReconnectInterval = 300 * time.Millisecond
	c.Phi.AcceptableHeartbeatPause = 500 * time.Millisecond
	c.Phi.MinStdDev = 50 * time.Millisecond
	return c
}

type cluster struct {
	t       testing.TB
	net     *MemNetwork
	members []*Gossip
	// mutate, if set, adjusts every member's configuration.
	mutate func(*Config)
}

// largeCluster slows gossip down for clusters of dozens of in-process
// members sharing two cores under the race detector: heartbeats are gossiped
// epidemically, so their cost grows with the square of the cluster size.
func largeCluster(c *Config) {
	ml := c.Memberlist
	ml.GossipInterval = 100 * time.Millisecond
	// Tolerate CPU starvation (other packages' tests run in parallel):
	// a false memberlist death only heals after a reconnect.
	ml.ProbeInterval = time.Second
	ml.ProbeTimeout = 500 * time.Millisecond
	ml.SuspicionMult = 4
	ml.TCPTimeout = 2 * time.Second
	c.HeartbeatInterval = 500 * time.Millisecond
	c.ReconnectInterval = 2 * time.Second
	c.Phi.FirstHeartbeatEstimate = 500 * time.Millisecond
	c.Phi.AcceptableHeartbeatPause = time.Second
	c.Phi.MinStdDev = 100 * time.Millisecond
}

func (c *cluster) start(id string, mutate func(*Config)) *Gossip {
	c.t.Helper()
	cfg := testConfig(id, c.net)
	if c.mutate != nil {
		c.mutate(cfg)
	}
	if mutate != nil {
		mutate(cfg)
	}
	g, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { g.Close() })
	c.members = append(c.members, g)
	return g
}

// startCluster starts n members m00..m(n-1); each joins through one of the
// members before it (spreading the load of the joins), retrying on failure.
func startCluster(t testing.TB, n int, mutate func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, net: NewMemNetwork(), mutate: mutate}
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	for i := range n {
		g := c.start(fmt.Sprintf("m%02d", i), nil)
		if i == 0 {
			continue
		}
		var err error
		for range 3 {
			if _, err = g.Join(c.members[rng.IntN(i)].LocalAddr()); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// waitFor polls cond every 10ms until it holds, failing the test after
// timeout, and returns how long it took. It is the tests' only way to wait.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not reached within %v", what, timeout)
		}
		<-tick.C
	}
	return time.Since(start)
}

// everyone reports whether pred holds for every (observer, member) pair of
// the given observers and targets.
func everyone(observers []*Gossip, targets []ring.NodeID, pred func(m Member, ok bool) bool) bool {
	for _, o := range observers {
		for _, id := range targets {
			if !pred(o.Member(id)) {
				return false
			}
		}
	}
	return true
}

func ids(gs []*Gossip) []ring.NodeID {
	out := make([]ring.NodeID, len(gs))
	for i, g := range gs {
		out[i] = g.cfg.ID
	}
	return out
}

func alive(m Member, ok bool) bool { return ok && m.Reachable && m.State != ring.StateLeft }

// leakCheck fails the test if goroutines it started outlive it. memberlist's
// Shutdown does not wait for an in-flight probe (up to a probe interval plus
// timeouts, longer under the race detector), so the check polls for up to
// 15s before verifying.
func leakCheck(t *testing.T) {
	opts := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		deadline := time.Now().Add(15 * time.Second)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for goleak.Find(opts) != nil && time.Now().Before(deadline) {
			<-tick.C
		}
		goleak.VerifyNone(t, opts)
	})
}

func TestConfigValidate(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"no id":      func(c *Config) { c.ID = "" },
		"bad key":    func(c *Config) { c.SecretKeys = [][]byte{[]byte("short")} },
		"left":       func(c *Config) { c.State = ring.StateLeft },
		"too many":   func(c *Config) { c.Tokens = make([]ring.Token, MaxTokens+1) },
		"long label": func(c *Config) { c.Label = string(make([]byte, 300)) },
	} {
		c := LocalConfig()
		c.ID = "x"
		mutate(c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: expected error", name)
		}
	}
}

// TestLifecycle runs three members through join, token allocation, state
// changes, a graceful leave and a failure, checking the events, the rings and
// the metrics each member sees.
func TestLifecycle(t *testing.T) {
	leakCheck(t)
	c := &cluster{t: t, net: NewMemNetwork()}
	a := c.start("a", nil)

	// Subscriptions: callbacks must never overlap.
	var mu sync.Mutex
	var events []Event
	var inFlight, overlaps atomic.Int32
	cancel := a.Subscribe(func(ev Event) {
		if inFlight.Add(1) > 1 {
			overlaps.Add(1)
		}
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
		inFlight.Add(-1)
	})
	defer cancel()
	a.Subscribe(func(Event) {
		if inFlight.Add(1) > 1 {
			overlaps.Add(1)
		}
		inFlight.Add(-1)
	})
	seen := func(typ EventType, id ring.NodeID) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range events {
			if ev.Type == typ && ev.Member.ID == id {
				return true
			}
		}
		return false
	}

	// Members join one at a time and allocate tokens from the ring they see.
	for _, id := range []string{"a", "b", "c", "d"} {
		g := a
		if id != "a" {
			g = c.start(id, func(cfg *Config) { cfg.Zone = "z-" + id })
			if _, err := g.Join(a.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 10*time.Second, id+" sees everyone", func() bool {
			return everyone([]*Gossip{g}, ids(c.members), func(m Member, ok bool) bool { return ok && (len(m.Tokens) > 0 || m.ID == g.cfg.ID) })
		})
		toks, err := g.Ring().AllocateTokens(g.cfg.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.SetTokens(toks); err != nil {
			t.Fatal(err)
		}
		if err := g.SetTokens(toks); err != ErrTokensSet {
			t.Fatalf("second SetTokens: %v", err)
		}
		if err := g.SetState(ring.StateNormal); err != nil {
			t.Fatal(err)
		}
	}
	all := ids(c.members)
	waitFor(t, 10*time.Second, "everyone NORMAL, Up, with tokens", func() bool {
		return everyone(c.members, all, func(m Member, ok bool) bool {
			return ok && m.State == ring.StateNormal && m.Up && len(m.Tokens) == ring.DefaultVNodes
		})
	})
	// Every member places keys identically.
	for k := range 200 {
		key := []byte(fmt.Sprint("key", k))
		want := a.Ring().Owners(key, 3)
		for _, g := range c.members[1:] {
			if got := g.Ring().Owners(key, 3); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("key %s: %s places on %v, a on %v", key, g.cfg.ID, got, want)
			}
		}
	}
	if !seen(EventJoin, "d") || !seen(EventUp, "d") || !seen(EventUpdate, "d") {
		t.Fatalf("missing events for d: %+v", events)
	}
	if m := a.Metrics(); m.MembersByState[ring.StateNormal] != 4 || m.Propagation.Count == 0 || len(m.Phi) != 3 {
		t.Fatalf("metrics %+v", m)
	}

	// A state change reaches everyone.
	b, cc, d := c.members[1], c.members[2], c.members[3]
	if err := b.SetState(ring.StateLeaving); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "LEAVING seen", func() bool {
		return everyone(c.members, []ring.NodeID{"b"}, func(m Member, ok bool) bool { return m.State == ring.StateLeaving })
	})
	// b leaves gracefully: off every ring, LEFT event.
	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	b.Close()
	rest := []*Gossip{a, cc, d}
	defer func() {
		if t.Failed() {
			for _, g := range rest {
				m, ok := g.Member("b")
				_, onRing := g.Ring().Member("b")
				t.Logf("%s sees b: %v %+v onRing=%v", g.cfg.ID, ok, m, onRing)
			}
			t.Logf("leave event seen: %v", seen(EventLeave, "b"))
		}
	}()
	waitFor(t, 5*time.Second, "b LEFT and off the ring", func() bool {
		for _, g := range rest {
			m, _ := g.Member("b")
			if _, onRing := g.Ring().Member("b"); m.State != ring.StateLeft || onRing {
				return false
			}
		}
		return seen(EventLeave, "b")
	})
	// d fails: Down (phi) and unreachable (memberlist), but stays on the ring.
	d.Close()
	waitFor(t, 10*time.Second, "d down", func() bool {
		return everyone([]*Gossip{a, cc}, []ring.NodeID{"d"}, func(m Member, ok bool) bool { return ok && !m.Up && !m.Reachable })
	})
	if _, onRing := a.Ring().Member("d"); !onRing {
		t.Fatal("a failed member must stay on the ring")
	}
	if !seen(EventDown, "d") || seen(EventLeave, "d") {
		t.Fatal("expected a Down event and no Leave event for d")
	}
	m := a.Metrics()
	if m.MembersByState[ring.StateLeft] != 1 || m.Unreachable != 1 || m.Down != 1 {
		t.Fatalf("metrics after leave and failure: %+v", m)
	}
	if overlaps.Load() != 0 {
		t.Fatal("subscriber callbacks ran concurrently")
	}
	for _, g := range c.members {
		g.Close()
	}
}

// TestEncryptionAndLabel checks that members without the cluster's key, with
// a wrong key, or with another label are refused.
func TestEncryptionAndLabel(t *testing.T) {
	leakCheck(t)
	key := []byte("0123456789abcdef")
	other := []byte("fedcba9876543210")
	c := &cluster{t: t, net: NewMemNetwork()}
	secure := func(k []byte, label string) func(*Config) {
		return func(cfg *Config) {
			if k != nil {
				cfg.SecretKeys = [][]byte{k}
			}
			cfg.Label = label
		}
	}
	a := c.start("a", secure(key, "prod"))
	for _, tc := range []struct {
		id     string
		mutate func(*Config)
	}{
		{"nokey", secure(nil, "prod")},
		{"wrongkey", secure(other, "prod")},
		{"wronglabel", secure(key, "staging")},
	} {
		g := c.start(tc.id, tc.mutate)
		if _, err := g.Join(a.LocalAddr()); err == nil {
			t.Errorf("%s: join succeeded", tc.id)
		}
		if _, ok := a.Member(ring.NodeID(tc.id)); ok {
			t.Errorf("%s: admitted", tc.id)
		}
		g.Close()
	}
	good := c.start("good", secure(key, "prod"))
	if _, err := good.Join(a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "good admitted", func() bool {
		m, ok := a.Member("good")
		return ok && m.Up
	})
	for _, g := range c.members {
		g.Close()
	}
}

// TestPartition cuts a six-member cluster in two through the MemNetwork: each
// side must see the other Down (phi) while its own side stays Up; after the
// heal everyone is Up and reachable again.
func TestPartition(t *testing.T) {
	leakCheck(t)
	c := startCluster(t, 6, nil)
	all := ids(c.members)
	waitFor(t, 10*time.Second, "converged", func() bool {
		return everyone(c.members, all, func(m Member, ok bool) bool { return ok && m.Up })
	})
	left, right := c.members[:3], c.members[3:]
	names := func(gs []*Gossip) []string {
		var out []string
		for _, g := range gs {
			out = append(out, string(g.cfg.ID))
		}
		return out
	}
	c.net.Partition(names(left), names(right))
	took := waitFor(t, 15*time.Second, "each side sees the other down", func() bool {
		return everyone(left, ids(right), func(m Member, ok bool) bool { return ok && !m.Up }) &&
			everyone(right, ids(left), func(m Member, ok bool) bool { return ok && !m.Up })
	})
	if !everyone(left, ids(left), func(m Member, ok bool) bool { return m.Up }) ||
		!everyone(right, ids(right), func(m Member, ok bool) bool { return m.Up }) {
		t.Fatal("members of the same side suspect each other")
	}
	t.Logf("partition detected by phi on both sides after %v", took)
	c.net.Heal()
	took = waitFor(t, 20*time.Second, "healed", func() bool {
		return everyone(c.members, all, func(m Member, ok bool) bool { return ok && m.Up && m.Reachable })
	})
	t.Logf("after the heal everyone is Up and reachable after %v", took)
	for _, g := range c.members {
		g.Close()
	}
}

// convergence runs the 50-member scenario and returns the measured times.
func convergence(t testing.TB, n int) map[string]time.Duration {
	out := map[string]time.Duration{}
	start := time.Now()
	c := startCluster(t, n, largeCluster)
	out["start and join calls"] = time.Since(start)
	all := ids(c.members)
	// NB: generous bounds: under the race detector, on 2 cores shared with
	// the other packages' tests, 50 members take far longer than the ~10 s
	// they take alone; the figures are what this test reports.
	out["join (all see all alive)"] = waitFor(t, 3*time.Minute, "join convergence", func() bool {
		return everyone(c.members, all, alive)
	})
	out["join (all Up by phi)"] = waitFor(t, 3*time.Minute, "phi up", func() bool {
		return everyone(c.members, all, func(m Member, ok bool) bool { return ok && m.Up })
	}) + out["join (all see all alive)"] // measured from the last Join call

	// A state change, timed from the call (SetState blocks until memberlist
	// has sent the update).
	st := time.Now()
	if err := c.members[n/2].SetState(ring.StateNormal); err != nil {
		t.Fatal(err)
	}
	out["state change"] = time.Since(st) + waitFor(t, 30*time.Second, "state change", func() bool {
		return everyone(c.members, all[n/2:n/2+1], func(m Member, ok bool) bool { return m.State == ring.StateNormal })
	})

	// Graceful leaves.
	k := max(1, n/10)
	leavers := c.members[n-k:]
	lt := time.Now()
	for _, g := range leavers {
		// The timeout bounds the wait for the announcement to be sent;
		// under load (two cores, race detector) that can take seconds.
		if err := g.Leave(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range leavers {
		g.Close()
	}
	stay := c.members[:n-k]
	waitFor(t, 30*time.Second, "leaves", func() bool {
		return everyone(stay, ids(leavers), func(m Member, ok bool) bool {
			return !ok || m.State == ring.StateLeft
		})
	})
	out["leave"] = time.Since(lt)

	// Failures.
	failed := stay[len(stay)-k:]
	stay = stay[:len(stay)-k]
	ft := time.Now()
	for _, g := range failed {
		g.Close()
	}
	waitFor(t, 30*time.Second, "failures detected by phi", func() bool {
		return everyone(stay, ids(failed), func(m Member, ok bool) bool { return ok && !m.Up })
	})
	out["failure (phi Down everywhere)"] = time.Since(ft)
	waitFor(t, 60*time.Second, "failures detected by memberlist", func() bool {
		return everyone(stay, ids(failed), func(m Member, ok bool) bool { return ok && !m.Reachable })
	})
	out["failure (memberlist dead everywhere)"] = time.Since(ft)
	var maxProp time.Duration
	for _, g := range stay {
		maxProp = max(maxProp, g.Metrics().Propagation.Max)
	}
	out["max propagation delay (metric)"] = maxProp
	for _, g := range c.members {
		g.Close()
	}
	return out
}

// TestConvergence50 runs 50 in-process members through joins, a state
// change, five graceful leaves and five failures, and reports how long each
// took to reach every member.
func TestConvergence50(t *testing.T) {
	if testing.Short() {
		t.Skip("50 members")
	}
	leakCheck(t)
	res := convergence(t, 50)
	var keys []string
	for k := range res {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("50 members: %-40s %v", k, res[k].Round(time.Millisecond))
	}
}

// BenchmarkConvergence measures convergence time against cluster size with
// in-process members (MemNetwork). Run it with make bench-ring, or:
//
//	go test -run='^$' -bench=Convergence -benchtime=1x ./ring/gossip
func BenchmarkConvergence(b *testing.B) {
	for _, n := range []int{10, 50, 100} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			for range b.N {
				res := convergence(b, n)
				b.ReportMetric(res["join (all see all alive)"].Seconds(), "join-s")
				b.ReportMetric(res["join (all Up by phi)"].Seconds(), "phi-up-s")
				b.ReportMetric(res["state change"].Seconds(), "state-s")
				b.ReportMetric(res["leave"].Seconds(), "leave-s")
				b.ReportMetric(res["failure (phi Down everywhere)"].Seconds(), "fail-phi-s")
				b.ReportMetric(res["failure (memberlist dead everywhere)"].Seconds(), "fail-ml-s")
			}
		})
	}
}
