// Package gossip is tierkv's cluster membership: it runs
// hashicorp/memberlist (SWIM gossip) to learn who is in the cluster and what
// each member says about itself (Meta: id, zone, addresses, state,
// generation, tokens), gossips heartbeats that feed a phi accrual failure
// detector (package ring/phi), and keeps a ring.Ring of the members that
// have not left.
//
// It is the only tierkv package that imports memberlist.
//
//	cfg := gossip.DefaultConfig()
//	cfg.ID, cfg.Zone, cfg.RPCAddr = "n1", "us-east-1a", "10.0.0.1:7000"
//	cfg.Seeds = []string{"10.0.0.2:7946"}
//	g, err := gossip.New(cfg)
//	...
//	g.Join()
//	toks, _ := g.Ring().AllocateTokens(cfg.ID) // a new member, once joined
//	g.SetTokens(toks)
//	g.SetState(ring.StateNormal)
//	cancel := g.Subscribe(func(ev gossip.Event) { ... })
//	...
//	g.Leave(5 * time.Second)
//	g.Close()
//
// # Two views of liveness
//
// Member.Reachable is memberlist's SWIM verdict (alive or suspect versus
// dead). Member.Up is the phi accrual detector's verdict, computed from the
// arrival times of gossiped heartbeats and independent of memberlist; the
// node layer routes requests by Up. A member that fails stays on the ring (it
// still owns its ranges, and hints are kept for it); only a member that left
// (state LEFT) is removed from the ring.
//
// # Heartbeats
//
// Every HeartbeatInterval a member queues a heartbeat (id, generation,
// sequence number) on memberlist's gossip broadcast queue. A receiver that
// sees a newer sequence number for an origin records its arrival in the phi
// detector and queues it for re-gossip, so heartbeats spread epidemically
// like Cassandra's heartbeat versions; a newer heartbeat replaces an older
// one in the queue.
//
// # Convergence
//
// Meta.ChangedAt stamps a state change with the originator's wall clock; a
// receiver records now - ChangedAt when the change reaches it
// (Metrics.Propagation). The cluster's convergence time for a change is the
// maximum of that delay over all members, which the node layer exports as a
// histogram (subject to clock skew between hosts).
package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tierkv/tierkv/ring"
	"github.com/tierkv/tierkv/ring/phi"
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("gossip: closed")

// ErrTokensSet is returned by SetTokens when the member already has tokens:
// tokens belong to an id for life.
var ErrTokensSet = errors.New("gossip: member already has tokens")

// EventType says what happened to a member.
type EventType uint8

const (
	// EventJoin: a member was seen for the first time (or again after it
	// left).
	EventJoin EventType = iota + 1
	// EventUpdate: a member's metadata (state, tokens, addresses) or its
	// memberlist reachability changed.
	EventUpdate
	// EventLeave: a member left (state LEFT); it is no longer on the ring.
	EventLeave
	// EventUp: the phi detector considers the member up.
	EventUp
	// EventDown: the phi detector considers the member down.
	EventDown
)

// String returns the event type's name.
func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventUp:
		return "up"
	case EventDown:
		return "down"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is a membership or liveness change, delivered to subscribers.
type Event struct {
	// Type says what happened.
	Type EventType
	// Member is the member's state after the change.
	Member Member
}

// Member is a member as this node sees it.
type Member struct {
	// Meta is what the member gossips about itself.
	Meta
	// Addr is its gossip address (host:port).
	Addr string
	// Reachable is memberlist's view: false once memberlist declared the
	// member dead.
	Reachable bool
	// Up is the phi detector's view. The local member is always Up.
	Up bool
}

// PropagationStats summarises how long state changes took to reach this
// member (see the package comment).
type PropagationStats struct {
	// Count is the number of state changes observed.
	Count uint64
	// Last, Max and Mean are the delays.
	Last, Max, Mean time.Duration
}

// Metrics is a snapshot of the member's view of the cluster.
type Metrics struct {
	// MembersByState counts members, including this one, by gossiped state.
	// LEFT members are counted until memberlist forgets them.
	MembersByState map[ring.State]int
	// Unreachable counts members memberlist declared dead that did not
	// leave.
	Unreachable int
	// Down counts members (not LEFT) the phi detector considers down,
	// including those it never heard a heartbeat from.
	Down int
	// Phi is the current phi of every peer with a heartbeat.
	Phi map[ring.NodeID]float64
	// Propagation is the delay of state changes reaching this member.
	Propagation PropagationStats
	// CorruptMessages counts gossiped messages and metadata that failed to
	// decode.
	CorruptMessages uint64
}

// Gossip is a running cluster member. Its methods are safe for concurrent
// use.
type Gossip struct {
	cfg   Config
	ml    atomic.Pointer[memberlist.Memberlist]
	queue *memberlist.TransmitLimitedQueue
	det   *phi.Detector
	ring  atomic.Pointer[ring.Ring]
	seq   atomic.Uint64
	// corrupt counts undecodable messages.
	corrupt atomic.Uint64
	closed  atomic.Bool
	// addr is the advertised gossip address, set once by New.
	addr string
	// numNodes is the number of reachable members that did not leave,
	// this one included; it sizes the broadcast retransmissions.
	numNodes atomic.Int32

	// mu must never be held while calling into memberlist: memberlist calls
	// the delegates (which take mu) with its own locks held.
	mu struct {
		sync.Mutex
		// self is this member's metadata and selfEnc its encoding, served
		// to memberlist by NodeMeta. members holds the peers (not self).
		// hb is the newest heartbeat seen per origin. left holds the
		// tombstones of members that left: id -> newest generation that
		// left (kept forever; one small entry per departed id). prop accumulates
		// propagation delays. All guarded by mu; events are queued on
		// disp while mu is held so that they are delivered in the order
		// of the changes.
		self    Meta
		selfEnc []byte
		members map[ring.NodeID]*Member
		hb      map[ring.NodeID]heartbeat
		left    map[ring.NodeID]uint64
		prop    PropagationStats
		propSum time.Duration
		// prev is the metadata peers held for this member's id from an
		// older generation, learned at Join (see Predecessor).
		prev    Meta
		hasPrev bool
	}

	disp      dispatcher
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New starts a member: it binds memberlist's transport and starts gossiping,
// but does not contact anyone until Join. cfg is copied.
func New(cfg *Config) (*Gossip, error) {
	c := *cfg
	c.Tokens = slices.Clone(c.Tokens)
	c.SecretKeys = slices.Clone(c.SecretKeys)
	c.EnsureDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	det, err := phi.New(&c.Phi)
	if err != nil {
		return nil, err
	}
	g := &Gossip{cfg: c, det: det, stop: make(chan struct{})}
	g.mu.self = c.meta()
	g.mu.selfEnc, err = g.mu.self.MarshalBinary()
	if err != nil {
		return nil, err
	}
	g.mu.members = make(map[ring.NodeID]*Member)
	g.mu.hb = make(map[ring.NodeID]heartbeat)
	g.mu.left = make(map[ring.NodeID]uint64)
	g.rebuildRingLocked()

	mc := *c.Memberlist
	mc.Name = string(c.ID)
	mc.BindAddr, mc.BindPort = c.BindAddr, c.BindPort
	mc.AdvertiseAddr, mc.AdvertisePort = c.AdvertiseAddr, c.AdvertisePort
	if c.Transport != nil {
		mc.Transport = c.Transport
	}
	mc.Delegate = (*delegate)(g)
	mc.Events = (*eventDelegate)(g)
	mc.Merge = (*mergeDelegate)(g)
	mc.Label = c.Label
	mc.SkipInboundLabelCheck = false
	if len(c.SecretKeys) > 0 {
		kr, err := memberlist.NewKeyring(c.SecretKeys, c.SecretKeys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip: keyring: %w", err)
		}
		mc.Keyring = kr
		mc.SecretKey = nil
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.LogOutput = nil
	mc.Logger = slog.NewLogLogger(c.Logger.Handler(), slog.LevelDebug)
	g.queue = &memberlist.TransmitLimitedQueue{
		// NB: not ml.NumMembers: GetBroadcasts holds the queue's lock while
		// calling NumNodes, and the delegates queue broadcasts while
		// memberlist holds its node lock; asking memberlist here could
		// deadlock.
		NumNodes:       func() int { return int(g.numNodes.Load()) },
		RetransmitMult: mc.RetransmitMult,
	}
	g.disp.init()
	ml, err := memberlist.Create(&mc)
	if err != nil {
		g.disp.close()
		return nil, fmt.Errorf("gossip: start memberlist: %w", err)
	}
	g.ml.Store(ml)
	n := ml.LocalNode()
	g.addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	g.wg.Add(2)
	go g.heartbeatLoop()
	go g.reconnectLoop()
	return g, nil
}

// LocalAddr returns the address (host:port) peers use to reach this member;
// give it to others as a seed.
func (g *Gossip) LocalAddr() string { return g.addr }

// Join contacts the given seed addresses, or Config.Seeds if none are given,
// and returns how many it reached. It fails only if none was reached.
func (g *Gossip) Join(seeds ...string) (int, error) {
	if g.closed.Load() {
		return 0, ErrClosed
	}
	if len(seeds) == 0 {
		seeds = g.cfg.Seeds
	}
	if len(seeds) == 0 {
		return 0, errors.New("gossip: no seeds")
	}
	n, err := g.ml.Load().Join(seeds)
	if n > 0 {
		return n, nil
	}
	return 0, fmt.Errorf("gossip: join %v: %w", seeds, err)
}

// Self returns this member's current metadata.
func (g *Gossip) Self() Meta {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.mu.self
	m.Tokens = slices.Clone(m.Tokens)
	return m
}

// updateSelf applies f to this member's metadata and gossips the result.
func (g *Gossip) updateSelf(timeout time.Duration, f func(m *Meta) error) error {
	if g.closed.Load() {
		return ErrClosed
	}
	g.mu.Lock()
	m := g.mu.self
	m.Tokens = slices.Clone(m.Tokens)
	if err := f(&m); err != nil {
		g.mu.Unlock()
		return err
	}
	enc, err := m.MarshalBinary()
	if err != nil {
		g.mu.Unlock()
		return err
	}
	g.mu.self, g.mu.selfEnc = m, enc
	g.rebuildRingLocked()
	g.mu.Unlock()
	// NB: UpdateNode calls NodeMeta, which takes g.mu. Its only error is
	// that the broadcast was not sent within timeout; the change is applied
	// locally and keeps spreading by gossip, so a busy host is no reason to
	// fail the caller.
	if err := g.ml.Load().UpdateNode(timeout); err != nil {
		g.cfg.Logger.Warn("gossip: metadata update not broadcast yet; it will spread by gossip", "err", err)
	}
	return nil
}

// SetState changes this member's state and gossips it. Use Leave, not
// SetState, to leave.
func (g *Gossip) SetState(s ring.State) error {
	if !s.Valid() || s == ring.StateLeft {
		return fmt.Errorf("gossip: SetState(%v): use Leave to leave", s)
	}
	return g.updateSelf(g.cfg.Memberlist.TCPTimeout, func(m *Meta) error {
		if m.State != s {
			m.State = s
			m.ChangedAt = g.cfg.Clock.Now().UnixMilli()
		}
		return nil
	})
}

// SetTokens sets this member's tokens, once: a new member calls it after
// joining, with tokens from Ring().AllocateTokens. It fails with
// ErrTokensSet if the member already has tokens.
func (g *Gossip) SetTokens(tokens []ring.Token) error {
	return g.updateSelf(g.cfg.Memberlist.TCPTimeout, func(m *Meta) error {
		if len(m.Tokens) > 0 {
			return ErrTokensSet
		}
		m.Tokens = slices.Clone(tokens)
		return nil
	})
}

// SetClockID sets or changes this member's clock id (the node layer's HLC
// tie-break, 0..MaxClockID) and gossips it. Unlike tokens it may change: a
// member that finds another live member with the same clock id picks a new
// one.
func (g *Gossip) SetClockID(id uint8) error {
	if id > MaxClockID {
		return fmt.Errorf("gossip: clock id %d above %d", id, MaxClockID)
	}
	return g.updateSelf(g.cfg.Memberlist.TCPTimeout, func(m *Meta) error {
		m.HasClockID, m.ClockID = true, id
		return nil
	})
}

// Predecessor returns the metadata that peers held, when this member
// joined, for its own id from another generation (normally an older one):
// the member's previous process, or the dead member that a replacement
// with the same id takes over. A replacement with an empty data directory learns its tokens and
// clock id from it. It is learned from the push/pull exchanges of Join; ok
// is false if no peer knew the id.
func (g *Gossip) Predecessor() (m Meta, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m = g.mu.prev
	m.Tokens = slices.Clone(m.Tokens)
	return m, g.mu.hasPrev
}

// mergeDelegate implements memberlist.MergeDelegate: it never cancels a
// merge, and records what the peer says about this member's own id.
type mergeDelegate Gossip

var _ memberlist.MergeDelegate = (*mergeDelegate)(nil)

// NotifyMerge is part of the memberlist.MergeDelegate interface.
func (d *mergeDelegate) NotifyMerge(peers []*memberlist.Node) error {
	g := (*Gossip)(d)
	for _, p := range peers {
		if p.Name != string(g.cfg.ID) {
			continue
		}
		var m Meta
		// NB: not only older generations: a replacement on a host whose
		// clock is behind may start with a lower one.
		if err := m.UnmarshalBinary(p.Meta); err != nil || m.ID != g.cfg.ID || m.Generation == g.cfg.Generation {
			continue
		}
		g.mu.Lock()
		if !g.mu.hasPrev || m.Generation > g.mu.prev.Generation {
			g.mu.prev, g.mu.hasPrev = m, true
		}
		g.mu.Unlock()
	}
	return nil
}

// Leave announces that this member leaves the cluster for good: it gossips
// state LEFT, so that peers drop it from their rings, then leaves memberlist,
// waiting up to timeout for the news to spread. Call Close afterwards.
func (g *Gossip) Leave(timeout time.Duration) error {
	err := g.updateSelf(timeout, func(m *Meta) error {
		m.State = ring.StateLeft
		m.ChangedAt = g.cfg.Clock.Now().UnixMilli()
		return nil
	})
	if err != nil {
		return err
	}
	g.queueLeft(g.cfg.ID, g.cfg.Generation)
	return g.ml.Load().Leave(timeout)
}

// Close stops the member without announcing a leave (peers will see it fail
// unless Leave was called first). It is idempotent. It waits for the
// subscriber goroutine, so it must not be called from a subscriber.
func (g *Gossip) Close() error {
	var err error
	g.closeOnce.Do(func() {
		g.closed.Store(true)
		close(g.stop)
		g.wg.Wait()
		err = g.ml.Load().Shutdown()
		g.disp.close()
	})
	return err
}

// Ring returns the current ring of every member (this one included) that
// has not left. The ring is immutable; a new one is built on every change.
func (g *Gossip) Ring() *ring.Ring { return g.ring.Load() }

// Members returns every known member, this one included, sorted by id.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.mu.members)+1)
	out = append(out, g.selfMemberLocked())
	for _, m := range g.mu.members {
		c := *m
		c.Tokens = slices.Clone(c.Tokens)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Member returns the member id as this node sees it.
func (g *Gossip) Member(id ring.NodeID) (Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if id == g.cfg.ID {
		return g.selfMemberLocked(), true
	}
	m, ok := g.mu.members[id]
	if !ok {
		return Member{}, false
	}
	c := *m
	c.Tokens = slices.Clone(c.Tokens)
	return c, true
}

func (g *Gossip) selfMemberLocked() Member {
	self := g.mu.self
	self.Tokens = slices.Clone(self.Tokens)
	return Member{Meta: self, Addr: g.addr, Reachable: true, Up: true}
}

// Up reports whether the phi detector considers id up. This member is always
// up.
func (g *Gossip) Up(id ring.NodeID) bool {
	if id == g.cfg.ID {
		return true
	}
	return g.det.Up(string(id))
}

// Phi returns the phi detector's current phi for id.
func (g *Gossip) Phi(id ring.NodeID) float64 { return g.det.Phi(string(id)) }

// Metrics returns a snapshot of the member's metrics.
func (g *Gossip) Metrics() Metrics {
	out := Metrics{MembersByState: make(map[ring.State]int), Phi: make(map[ring.NodeID]float64)}
	for _, s := range g.det.Snapshot() {
		out.Phi[ring.NodeID(s.Peer)] = s.Phi
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	out.MembersByState[g.mu.self.State]++
	for _, m := range g.mu.members {
		out.MembersByState[m.State]++
		if m.State == ring.StateLeft {
			continue
		}
		if !m.Reachable {
			out.Unreachable++
		}
		if !m.Up {
			out.Down++
		}
	}
	out.Propagation = g.mu.prop
	out.CorruptMessages = g.corrupt.Load()
	return out
}

// Subscribe registers fn for every membership and liveness event from now
// on and returns a function that cancels the subscription. Callbacks run on
// a single goroutine, one at a time and in order, never concurrently, also
// across subscribers; a slow callback delays the others but never blocks
// gossip (events queue up). A callback may call any method but Close.
func (g *Gossip) Subscribe(fn func(Event)) (cancel func()) { return g.disp.subscribe(fn) }

// rebuildRingLocked publishes a new ring from the current members.
func (g *Gossip) rebuildRingLocked() {
	ms := make([]ring.Member, 0, len(g.mu.members)+1)
	add := func(m Meta) {
		if m.State != ring.StateLeft {
			ms = append(ms, ring.Member{ID: m.ID, Zone: m.Zone, State: m.State, Tokens: m.Tokens})
		}
	}
	add(g.mu.self)
	for _, m := range g.mu.members {
		add(m.Meta)
	}
	n := int32(1)
	for _, m := range g.mu.members {
		if m.Reachable && m.State != ring.StateLeft {
			n++
		}
	}
	g.numNodes.Store(n)
	r, err := ring.New(&g.cfg.Ring, ms...)
	if err != nil {
		// Metadata is validated on decode, ids are unique map keys: this
		// cannot happen. Keep the previous ring rather than fail.
		g.cfg.Logger.Error("gossip: cannot build ring", "err", err)
		return
	}
	g.ring.Store(r)
}

func (g *Gossip) emitLocked(t EventType, m *Member) {
	c := *m
	c.Tokens = slices.Clone(c.Tokens)
	g.disp.push(Event{Type: t, Member: c})
}

// heartbeatLoop gossips this member's heartbeat and evaluates the phi
// detector every HeartbeatInterval.
func (g *Gossip) heartbeatLoop() {
	defer g.wg.Done()
	t := time.NewTicker(g.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		h := heartbeat{Kind: msgHeartbeat, ID: g.cfg.ID, Generation: g.cfg.Generation, Seq: g.seq.Add(1)}
		g.queue.QueueBroadcast(&hbBroadcast{name: "hb/" + string(h.ID), msg: appendHeartbeat(nil, h)})
		trs := g.det.Update()
		if len(trs) == 0 {
			continue
		}
		g.mu.Lock()
		for _, tr := range trs {
			m, ok := g.mu.members[ring.NodeID(tr.Peer)]
			if !ok || m.Up == tr.Up {
				continue
			}
			m.Up = tr.Up
			if tr.Up {
				g.emitLocked(EventUp, m)
			} else {
				g.emitLocked(EventDown, m)
			}
		}
		g.mu.Unlock()
	}
}

// reconnectLoop periodically tries to rejoin members memberlist declared
// dead but that did not leave, so that a healed partition or a restarted
// member merges back even after memberlist stopped gossiping to it.
func (g *Gossip) reconnectLoop() {
	defer g.wg.Done()
	t := time.NewTicker(g.cfg.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		var addrs []string
		g.mu.Lock()
		for _, m := range g.mu.members {
			if !m.Reachable && m.State != ring.StateLeft && m.Addr != "" {
				addrs = append(addrs, m.Addr)
			}
		}
		g.mu.Unlock()
		if len(addrs) > 0 {
			// Errors are expected while the members are still away.
			_, _ = g.ml.Load().Join(addrs)
		}
	}
}

// hbBroadcast is a heartbeat on the broadcast queue; a newer heartbeat of the
// same origin replaces it (memberlist.NamedBroadcast).
type hbBroadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*hbBroadcast)(nil)

// Invalidates is part of the memberlist.Broadcast interface.
func (b *hbBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*hbBroadcast)
	return ok && ob.name == b.name
}

// Name is part of the memberlist.NamedBroadcast interface.
func (b *hbBroadcast) Name() string { return b.name }

// Message is part of the memberlist.Broadcast interface.
func (b *hbBroadcast) Message() []byte { return b.msg }

// Finished is part of the memberlist.Broadcast interface.
func (b *hbBroadcast) Finished() {}

// delegate implements memberlist.Delegate for a Gossip.
type delegate Gossip

var _ memberlist.Delegate = (*delegate)(nil)

// NodeMeta is part of the memberlist.Delegate interface.
func (d *delegate) NodeMeta(limit int) []byte {
	g := (*Gossip)(d)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mu.selfEnc
}

// NotifyMsg is part of the memberlist.Delegate interface: it receives
// heartbeats.
func (d *delegate) NotifyMsg(b []byte) {
	g := (*Gossip)(d)
	h, err := decodeHeartbeat(b)
	if err != nil {
		g.corrupt.Add(1)
		return
	}
	if h.ID == g.cfg.ID {
		return
	}
	if h.Kind == msgLeft {
		g.mu.Lock()
		news := g.applyLeftLocked(h.ID, h.Generation)
		g.mu.Unlock()
		if news {
			g.queueLeft(h.ID, h.Generation)
		}
		return
	}
	g.mu.Lock()
	prev, seen := g.mu.hb[h.ID]
	if seen && (h.Generation < prev.Generation || h.Generation == prev.Generation && h.Seq <= prev.Seq) {
		g.mu.Unlock()
		return
	}
	g.mu.hb[h.ID] = h
	m, known := g.mu.members[h.ID]
	track := known && m.State != ring.StateLeft
	g.mu.Unlock()
	if track {
		g.det.Heartbeat(string(h.ID))
	}
	g.queue.QueueBroadcast(&hbBroadcast{name: "hb/" + string(h.ID), msg: append([]byte(nil), b...)})
}

// GetBroadcasts is part of the memberlist.Delegate interface.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return (*Gossip)(d).queue.GetBroadcasts(overhead, limit)
}

// LocalState is part of the memberlist.Delegate interface: push/pull
// exchanges the tombstones of members that left, so that a leave reaches a
// member that missed its broadcast (for example because it had already
// declared the leaver dead).
func (d *delegate) LocalState(join bool) []byte {
	g := (*Gossip)(d)
	g.mu.Lock()
	defer g.mu.Unlock()
	msgs := make([]heartbeat, 0, len(g.mu.left))
	for id, gen := range g.mu.left {
		msgs = append(msgs, heartbeat{Kind: msgLeft, ID: id, Generation: gen})
		if len(msgs) == maxStateEntries {
			break
		}
	}
	return appendState(nil, msgs)
}

// MergeRemoteState is part of the memberlist.Delegate interface.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	g := (*Gossip)(d)
	msgs, err := decodeState(buf)
	if err != nil {
		g.corrupt.Add(1)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, h := range msgs {
		if h.Kind == msgLeft && h.ID != g.cfg.ID {
			g.applyLeftLocked(h.ID, h.Generation)
		}
	}
}

// queueLeft gossips the tombstone of a member that left.
func (g *Gossip) queueLeft(id ring.NodeID, gen uint64) {
	msg := appendHeartbeat(nil, heartbeat{Kind: msgLeft, ID: id, Generation: gen})
	g.queue.QueueBroadcast(&hbBroadcast{name: "left/" + string(id), msg: msg})
}

// applyLeftLocked records that id left up to generation gen, and marks the
// member LEFT if it is known with that generation or an older one. It
// reports whether the tombstone was news.
func (g *Gossip) applyLeftLocked(id ring.NodeID, gen uint64) bool {
	if old, ok := g.mu.left[id]; ok && old >= gen {
		return false
	}
	g.mu.left[id] = gen
	if m, ok := g.mu.members[id]; ok && m.Generation <= gen && m.State != ring.StateLeft {
		m.State = ring.StateLeft
		(*eventDelegate)(g).forgetLocked(m)
		g.rebuildRingLocked()
		g.emitLocked(EventLeave, m)
	}
	return true
}

// eventDelegate implements memberlist.EventDelegate for a Gossip.
type eventDelegate Gossip

var _ memberlist.EventDelegate = (*eventDelegate)(nil)

func (e *eventDelegate) decode(n *memberlist.Node) (Meta, bool) {
	g := (*Gossip)(e)
	var m Meta
	if err := m.UnmarshalBinary(n.Meta); err != nil {
		g.corrupt.Add(1)
		g.cfg.Logger.Warn("gossip: ignoring member with bad metadata", "node", n.Name, "err", err)
		return m, false
	}
	if string(m.ID) != n.Name {
		g.corrupt.Add(1)
		g.cfg.Logger.Warn("gossip: ignoring member whose metadata names another id", "node", n.Name, "id", m.ID)
		return m, false
	}
	return m, true
}

// NotifyJoin is part of the memberlist.EventDelegate interface.
func (e *eventDelegate) NotifyJoin(n *memberlist.Node) { e.upsert(n) }

// NotifyUpdate is part of the memberlist.EventDelegate interface.
func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) { e.upsert(n) }

func (e *eventDelegate) upsert(n *memberlist.Node) {
	g := (*Gossip)(e)
	if n.Name == string(g.cfg.ID) {
		return
	}
	meta, ok := e.decode(n)
	if !ok {
		return
	}
	now := g.cfg.Clock.Now()
	addr := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	g.mu.Lock()
	defer g.mu.Unlock()
	if tomb, ok := g.mu.left[meta.ID]; ok && meta.Generation <= tomb {
		meta.State = ring.StateLeft // a stale alive message of a member that left
	}
	if meta.State == ring.StateLeft {
		if _, ok := g.mu.left[meta.ID]; !ok || g.mu.left[meta.ID] < meta.Generation {
			g.mu.left[meta.ID] = meta.Generation
			g.queueLeft(meta.ID, meta.Generation)
		}
	}
	m, known := g.mu.members[meta.ID]
	if !known {
		m = &Member{}
		g.mu.members[meta.ID] = m
	}
	wasLeft := known && m.State == ring.StateLeft
	stateChanged := known && m.State != meta.State
	changed := !known || !m.Meta.Equal(&meta) || !m.Reachable || m.Addr != addr
	if meta.Generation > m.Generation && known {
		// A restarted process: forget the old heartbeat sequence.
		delete(g.mu.hb, meta.ID)
	}
	m.Meta, m.Addr, m.Reachable = meta, addr, true
	if stateChanged {
		d := now.Sub(time.UnixMilli(meta.ChangedAt))
		p := &g.mu.prop
		p.Count++
		p.Last = d
		p.Max = max(p.Max, d)
		g.mu.propSum += d
		p.Mean = g.mu.propSum / time.Duration(p.Count)
	}
	if !changed {
		return
	}
	g.rebuildRingLocked()
	switch {
	case meta.State == ring.StateLeft:
		if !wasLeft {
			e.forgetLocked(m)
			g.emitLocked(EventLeave, m)
		}
	case !known || wasLeft:
		g.emitLocked(EventJoin, m)
	default:
		g.emitLocked(EventUpdate, m)
	}
}

// forgetLocked stops failure detection of a member that left.
func (e *eventDelegate) forgetLocked(m *Member) {
	g := (*Gossip)(e)
	g.det.Remove(string(m.ID))
	delete(g.mu.hb, m.ID)
	m.Up = false
}

// NotifyLeave is part of the memberlist.EventDelegate interface: memberlist
// calls it both for a graceful leave and for a failure.
func (e *eventDelegate) NotifyLeave(n *memberlist.Node) {
	g := (*Gossip)(e)
	if n.Name == string(g.cfg.ID) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	m, known := g.mu.members[ring.NodeID(n.Name)]
	if !known {
		return
	}
	if n.State == memberlist.StateLeft && m.State != ring.StateLeft {
		// memberlist's leave message can overtake our LEFT metadata.
		if g.applyLeftLocked(m.ID, m.Generation) {
			g.queueLeft(m.ID, m.Generation)
		}
		return
	}
	if m.State == ring.StateLeft || !m.Reachable {
		return
	}
	m.Reachable = false
	g.rebuildRingLocked()
	g.emitLocked(EventUpdate, m)
}

// dispatcher delivers events to subscribers on one goroutine.
type dispatcher struct {
	mu struct {
		sync.Mutex
		// queue, subs and next are guarded by mu.
		queue []Event
		subs  []subscriber
		next  int
	}
	wake chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

type subscriber struct {
	id int
	fn func(Event)
}

func (d *dispatcher) init() {
	d.wake = make(chan struct{}, 1)
	d.done = make(chan struct{})
	d.wg.Add(1)
	go d.run()
}

func (d *dispatcher) push(ev Event) {
	d.mu.Lock()
	if len(d.mu.subs) > 0 {
		d.mu.queue = append(d.mu.queue, ev)
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) subscribe(fn func(Event)) func() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.next++
	id := d.mu.next
	d.mu.subs = append(d.mu.subs, subscriber{id, fn})
	return func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.mu.subs = slices.DeleteFunc(d.mu.subs, func(s subscriber) bool { return s.id == id })
	}
}

func (d *dispatcher) run() {
	defer d.wg.Done()
	for {
		select {
		case <-d.done:
			return
		case <-d.wake:
		}
		for {
			d.mu.Lock()
			if len(d.mu.queue) == 0 {
				d.mu.Unlock()
				break
			}
			ev := d.mu.queue[0]
			d.mu.queue = d.mu.queue[1:]
			subs := slices.Clone(d.mu.subs)
			d.mu.Unlock()
			for _, s := range subs {
				select {
				case <-d.done:
					return
				default:
				}
				s.fn(ev)
			}
		}
	}
}

func (d *dispatcher) close() {
	d.once.Do(func() {
		close(d.done)
		d.wg.Wait()
	})
}
