package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/node/antientropy"
	"github.com/tierkv/tierkv/ring"
)

// Join and decommission (docs/operations.md).
//
// Join: a node that allocates tokens in a cluster that already has members
// gossips them as JOINING. Coordinators then send it writes for its future
// ranges (placement.go) but do not read from it. Once every live member
// sees it JOINING, it streams each of its future ranges from the replica
// that range displaces (the old owner that is not a new one: what a quorum
// of the old replicas acknowledged is then on a quorum of the new ones), or
// from every old owner when none is displaced, and becomes NORMAL. The
// identity records that the join is incomplete, so a restart streams again.
//
// Decommission: the node gossips LEAVING (coordinators keep reading from it
// and also write to the ranges' future owners), hands each of its ranges to
// the node that gains it (Repair.Ingest, batch by batch, resumable), leaves
// the ring, waits for in-flight writes, hands over what was written during
// the first pass, and stops.

// topoProgress is the progress of a join or a decommission.
type topoProgress struct {
	mu                        sync.Mutex
	op                        string // "join" or "decommission"
	phase                     string
	streamsDone, streamsTotal int
	keys, bytes               int64
	started                   time.Time
	took                      time.Duration
	lastErr                   string
}

// TopologyStatus is the JSON of a join or decommission.
type TopologyStatus struct {
	Op           string  `json:"op"`
	Phase        string  `json:"phase"`
	StreamsDone  int     `json:"streams_done"`
	StreamsTotal int     `json:"streams_total"`
	Keys         int64   `json:"keys"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	LastError    string  `json:"last_error,omitempty"`
}

func (p *topoProgress) status() *TopologyStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.op == "" {
		return nil
	}
	return &TopologyStatus{Op: p.op, Phase: p.phase, StreamsDone: p.streamsDone, StreamsTotal: p.streamsTotal,
		Keys: p.keys, Bytes: p.bytes, Seconds: p.took.Seconds(), LastError: p.lastErr}
}

func (p *topoProgress) set(f func(*topoProgress)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// rangeMoves walks the elementary ranges of the gossiped ring and, for each
// one whose owners differ between from and to, calls fn with the range and
// both owner lists.
func rangeMoves(base, from, to *ring.Ring, rf int, fn func(r ring.Range, old, new []ring.NodeID)) {
	var toks []ring.Token
	for _, m := range base.Members() {
		toks = append(toks, m.Tokens...)
	}
	slices.Sort(toks)
	toks = slices.Compact(toks)
	if len(toks) == 0 {
		return
	}
	prev := toks[len(toks)-1]
	var a, b []ring.NodeID
	for _, t := range toks {
		a = from.OwnersOfTokenInto(a[:0], t, rf)
		b = to.OwnersOfTokenInto(b[:0], t, rf)
		r := ring.Range{Start: prev, End: t}
		prev = t
		if len(toks) == 1 {
			r = ring.Range{Start: t, End: t} // the whole ring
		}
		fn(r, a, b)
	}
}

// addRange appends r to rs, merging it with the last range if adjacent.
func addRange(rs []ring.Range, r ring.Range) []ring.Range {
	if k := len(rs) - 1; k >= 0 && rs[k].End == r.Start && rs[k].Start != rs[k].End {
		rs[k].End = r.End
		return rs
	}
	return append(rs, r)
}

// waitSeenAs waits until every live member reports self in state (through
// its Topology), or the timeout passes; it reports whether they all did.
func (n *Node) waitSeenAs(ctx context.Context, state ring.State, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	announced := time.Now()
	for {
		all := true
		for _, m := range n.g.Ring().Members() {
			if m.ID == n.id || !n.up(m.ID) {
				continue
			}
			if !n.peerSees(ctx, m.ID, state) {
				all = false
				break
			}
		}
		if all {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		if time.Since(announced) > time.Second {
			// A member may have missed every broadcast of the change:
			// announce it again (a new incarnation, broadcast anew).
			if err := n.g.SetState(state); err != nil {
				n.log.Warn("re-announcing state", "state", state, "err", err)
			}
			announced = time.Now()
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (n *Node) peerSees(ctx context.Context, peer ring.NodeID, state ring.State) bool {
	cc, err := n.conn(peer)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ReplicaTimeout)
	defer cancel()
	resp, err := kvv1.NewKVClient(cc).Topology(ctx, &kvv1.TopologyRequest{})
	if err != nil {
		return false
	}
	for _, m := range resp.Members {
		if m.Id == string(n.id) {
			return m.State == state.String() && len(m.Tokens) > 0
		}
	}
	return false
}

// bootstrap streams this JOINING node's future ranges and makes it NORMAL.
func (n *Node) bootstrap() {
	defer n.bg.Done()
	ctx, cancel := n.backgroundContext()
	defer cancel()
	start := time.Now()
	p := &n.topo
	p.set(func(p *topoProgress) { p.op, p.phase, p.started = "join", "announcing", start })
	if !n.waitSeenAs(ctx, ring.StateJoining, n.cfg.RingDelay) {
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("not every live member confirmed this node as JOINING; streaming anyway", "waited", n.cfg.RingDelay)
	}
	v := n.views()
	bySource := map[ring.NodeID][]ring.Range{}
	rangeMoves(v.base, v.read, v.future, n.cfg.ReplicationFactor, func(r ring.Range, old, new []ring.NodeID) {
		if !slices.Contains(new, n.id) || slices.Contains(old, n.id) {
			return
		}
		var displaced []ring.NodeID
		for _, id := range old {
			if !slices.Contains(new, id) {
				displaced = append(displaced, id)
			}
		}
		if len(displaced) == 0 {
			displaced = old
		}
		for _, src := range displaced {
			bySource[src] = addRange(bySource[src], r)
		}
	})
	sources := make([]ring.NodeID, 0, len(bySource))
	for s := range bySource {
		sources = append(sources, s)
	}
	slices.Sort(sources)
	p.set(func(p *topoProgress) { p.phase, p.streamsTotal = "streaming", len(sources) })
	n.log.Info("joining: streaming ranges", "sources", len(sources))
	var wg sync.WaitGroup
	errs := make([]error, len(sources))
	for i, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.streamFromWith(ctx, src, bySource[src], 0, func(keys, bytes int64) {
				p.set(func(p *topoProgress) { p.keys += keys; p.bytes += bytes })
			})
			if errs[i] == nil {
				p.set(func(p *topoProgress) { p.streamsDone++ })
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		if ctx.Err() == nil {
			// The ring stays as it is (this node JOINING); a restart
			// streams again.
			n.log.Error("join streaming failed; the node stays JOINING (restart it to retry)", "err", err)
			p.set(func(p *topoProgress) { p.phase, p.lastErr = "failed", err.Error() })
		}
		return
	}
	if err := n.g.SetState(ring.StateNormal); err != nil {
		n.log.Error("join: set NORMAL", "err", err)
		p.set(func(p *topoProgress) { p.phase, p.lastErr = "failed", err.Error() })
		return
	}
	n.ident.Lock()
	n.ident.id.Joining = false
	err := saveIdentity(n.cfg.DataDir, n.ident.id)
	n.ident.Unlock()
	if err != nil {
		n.log.Error("join: save identity", "err", err)
	}
	took := time.Since(start)
	p.set(func(p *topoProgress) { p.phase, p.took = "done", took })
	n.log.Info("joined: NORMAL", "after", took)
	// Make sure every member hears it (re-announcing if a broadcast was
	// missed): until then it keeps treating this node as pending.
	if !n.waitSeenAs(ctx, ring.StateNormal, n.cfg.RingDelay) && ctx.Err() == nil {
		n.log.Warn("not every live member confirmed this node as NORMAL yet; gossip will spread it")
	}
}

// Decommission hands this node's ranges to the nodes that gain them and
// leaves the cluster; the node then stops serving (Decommissioned is
// closed). It fails, leaving the ring as it was (the node NORMAL again), if
// a hand-over fails.
func (n *Node) Decommission(ctx context.Context) error {
	if !n.decommissioning.CompareAndSwap(false, true) {
		return errorf(ErrInvalidArgument, "a decommission is already running")
	}
	start := time.Now()
	p := &n.topo
	p.set(func(p *topoProgress) {
		p.op, p.phase, p.started, p.lastErr = "decommission", "announcing", start, ""
		p.streamsDone, p.streamsTotal, p.keys, p.bytes, p.took = 0, 0, 0, 0, 0
	})
	fail := func(err error) error {
		p.set(func(p *topoProgress) { p.phase, p.lastErr = "failed", err.Error() })
		if serr := n.g.SetState(ring.StateNormal); serr != nil {
			n.log.Error("decommission failed and the node could not return to NORMAL", "err", serr)
		}
		n.decommissioning.Store(false)
		return err
	}
	if err := n.g.SetState(ring.StateLeaving); err != nil {
		return fail(fmt.Errorf("node: decommission: %w", err))
	}
	if !n.waitSeenAs(ctx, ring.StateLeaving, n.cfg.RingDelay) {
		n.log.Warn("not every live member confirmed this node as LEAVING; handing over anyway")
	}
	v := n.views()
	byTarget := map[ring.NodeID][]ring.Range{}
	rangeMoves(v.base, v.read, v.future, n.cfg.ReplicationFactor, func(r ring.Range, old, new []ring.NodeID) {
		if !slices.Contains(old, n.id) {
			return
		}
		for _, id := range new {
			if !slices.Contains(old, id) {
				byTarget[id] = addRange(byTarget[id], r)
			}
		}
	})
	targets := make([]ring.NodeID, 0, len(byTarget))
	for t := range byTarget {
		targets = append(targets, t)
	}
	slices.Sort(targets)
	p.set(func(p *topoProgress) { p.phase, p.streamsTotal = "streaming", len(targets) })
	first := time.Now()
	if err := n.handOver(ctx, targets, byTarget, 0); err != nil {
		return fail(fmt.Errorf("node: decommission: %w", err))
	}
	// Leave: coordinators stop writing here once they see it.
	p.set(func(p *topoProgress) { p.phase = "leaving" })
	if err := n.g.Leave(n.cfg.ShutdownTimeout); err != nil {
		n.log.Warn("decommission: leave announcement", "err", err)
	}
	// Writes already sent here land within a replica timeout.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(n.cfg.ReplicaTimeout + n.cfg.RingDelay/4):
	}
	p.set(func(p *topoProgress) { p.phase = "streaming_recent" })
	if err := n.handOver(ctx, targets, byTarget, versionAtTime(first.Add(-n.cfg.ReplaceLookback))); err != nil {
		// The node has left; what it could not hand over is on the
		// other replicas, and anti-entropy copies it.
		n.log.Error("decommission: second hand-over failed", "err", err)
		p.set(func(p *topoProgress) { p.lastErr = err.Error() })
	}
	n.ident.Lock()
	n.ident.id.Decommissioned = true
	if err := saveIdentity(n.cfg.DataDir, n.ident.id); err != nil {
		n.log.Error("decommission: record it in node.json", "err", err)
	}
	n.ident.Unlock()
	took := time.Since(start)
	p.set(func(p *topoProgress) { p.phase, p.took = "done", took })
	n.log.Info("decommissioned", "after", took)
	close(n.decommissioned)
	return nil
}

// Decommissioned is closed once Decommission has handed everything over;
// the process should then Close the node and exit.
func (n *Node) Decommissioned() <-chan struct{} { return n.decommissioned }

// handOver sends each target its ranges (entries at or above minVersion).
func (n *Node) handOver(ctx context.Context, targets []ring.NodeID, byTarget map[ring.NodeID][]ring.Range, minVersion uint64) error {
	var wg sync.WaitGroup
	errs := make([]error, len(targets))
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.push(ctx, t, byTarget[t], minVersion)
			if errs[i] == nil && minVersion == 0 {
				n.topo.set(func(p *topoProgress) { p.streamsDone++ })
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// push streams this node's entries of ranges to target with Ingest, batch by
// batch; a failed batch is retried (the stream resumes after the last key
// target acknowledged).
func (n *Node) push(ctx context.Context, target ring.NodeID, ranges []ring.Range, minVersion uint64) error {
	var after []byte
	failures := 0
	for {
		err := n.ae.Stream(ctx, ranges, after, minVersion, func(es []lsm.Entry) error {
			cc, err := n.conn(target)
			if err != nil {
				return err
			}
			rctx, cancel := context.WithTimeout(ctx, n.cfg.ReplicaTimeout+5*time.Second)
			defer cancel()
			if _, err := kvv1.NewRepairClient(cc).Ingest(rctx, &kvv1.IngestRequest{Entries: entriesToPB(es)}); err != nil {
				return fmt.Errorf("ingest to %s: %w", target, fromStatus(err))
			}
			var size int64
			for _, e := range es {
				size += int64(antientropy.EntrySize(e))
			}
			after = slices.Clone(es[len(es)-1].Key)
			failures = 0
			n.topo.set(func(p *topoProgress) { p.keys += int64(len(es)); p.bytes += size })
			return nil
		})
		if err == nil || ctx.Err() != nil {
			return err
		}
		if failures++; failures >= n.cfg.ReplaceStreamAttempts {
			return fmt.Errorf("hand-over to %s: %d attempts failed, last: %w", target, failures, err)
		}
		n.log.Warn("hand-over interrupted; resuming", "target", target, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Duration(failures)*200*time.Millisecond, 5*time.Second)):
		}
	}
}
