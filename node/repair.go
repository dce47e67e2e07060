package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/node/antientropy"
	"github.com/tierkv/tierkv/ring"
)

// Anti-entropy (docs/antientropy.md): the node's engine is an
// antientropy.Local; the Repair gRPC service serves it to peers, and
// repairPeer is the antientropy.Peer of another node over that service. The
// scheduler repairs every range this node replicates with its other
// replicas every AntiEntropy.Interval and on POST /v1/admin/repair.

// openAntiEntropy creates the node's Local and Scheduler (not started).
func (n *Node) openAntiEntropy(grace time.Duration) error {
	c := n.cfg.AntiEntropy
	o := antientropy.Options{
		TombstoneGracePeriod: grace,
		VersionTime:          VersionTime,
	}
	if c.Rate > 0 {
		o.Limiter = rate.NewLimiter(rate.Limit(c.Rate), int(min(c.Rate, math.MaxInt32)))
	}
	var err error
	if n.ae, err = antientropy.NewLocal(n.db, &o); err != nil {
		return fmt.Errorf("node: anti-entropy: %w", err)
	}
	interval := c.Interval
	if interval < 0 {
		interval = math.MaxInt64 // periodic passes off; Trigger still works
	}
	n.aeSched, err = antientropy.NewScheduler(antientropy.SchedulerOptions{
		Self:     n.id,
		Local:    n.ae,
		Plan:     func() []antientropy.Work { return antientropy.Plan(n.g.Ring(), n.id, n.cfg.ReplicationFactor) },
		Peer:     n.repairPeer,
		Interval: interval,
		Logger:   n.log.With("component", "antientropy"),
	})
	if err != nil {
		return fmt.Errorf("node: anti-entropy: %w", err)
	}
	return nil
}

// repairPeer returns the antientropy.Peer of node id, if it is up.
func (n *Node) repairPeer(ctx context.Context, id ring.NodeID) (antientropy.Peer, error) {
	if !n.up(id) {
		return nil, errorf(ErrUnavailable, "replica %s is down", id)
	}
	cc, err := n.conn(id)
	if err != nil {
		return nil, err
	}
	return &grpcPeer{c: kvv1.NewRepairClient(cc)}, nil
}

// TriggerRepair runs an anti-entropy pass over every range this node
// replicates, with all its other replicas, and returns what it did.
func (n *Node) TriggerRepair(ctx context.Context) (antientropy.Stats, error) {
	return n.aeSched.Trigger(ctx)
}

// RepairMetrics returns the anti-entropy scheduler's progress and counters.
func (n *Node) RepairMetrics() antientropy.Metrics { return n.aeSched.Metrics() }

func rangeToPB(r ring.Range) *kvv1.TokenRange {
	return &kvv1.TokenRange{Start: uint64(r.Start), End: uint64(r.End)}
}

func rangeFromPB(r *kvv1.TokenRange) ring.Range {
	return ring.Range{Start: ring.Token(r.GetStart()), End: ring.Token(r.GetEnd())}
}

func rangesFromPB(rs []*kvv1.TokenRange) []ring.Range {
	out := make([]ring.Range, len(rs))
	for i, r := range rs {
		out[i] = rangeFromPB(r)
	}
	return out
}

func entryToPB(e lsm.Entry) *kvv1.Mutation {
	return &kvv1.Mutation{Key: e.Key, Value: e.Value, Version: e.Version, Tombstone: e.Deleted}
}

func entriesToPB(es []lsm.Entry) []*kvv1.Mutation {
	out := make([]*kvv1.Mutation, len(es))
	for i, e := range es {
		out[i] = entryToPB(e)
	}
	return out
}

// entryFromPB converts a mutation to an engine entry (a tombstone has no
// value; a set has a non-nil one).
func entryFromPB(m *kvv1.Mutation) lsm.Entry {
	e := lsm.Entry{Key: m.Key, Version: m.Version, Deleted: m.Tombstone}
	if !m.Tombstone {
		e.Value = m.Value
		if e.Value == nil {
			e.Value = []byte{}
		}
	}
	return e
}

// entriesFromPB checks and converts mutations received from a peer.
func (n *Node) entriesFromPB(ms []*kvv1.Mutation) ([]lsm.Entry, error) {
	out := make([]lsm.Entry, len(ms))
	for i, m := range ms {
		if err := n.checkMutation(m); err != nil {
			return nil, err
		}
		out[i] = entryFromPB(m)
	}
	return out, nil
}

// checkMutation validates a mutation from a peer like a replica Apply.
func (n *Node) checkMutation(m *kvv1.Mutation) error {
	if m == nil {
		return errorf(ErrInvalidArgument, "missing mutation")
	}
	if err := n.validateKey(m.Key); err != nil {
		return err
	}
	if len(m.Value) > n.cfg.MaxValueSize {
		return errorf(ErrTooLarge, "value of %d bytes exceeds max_value_size %d", len(m.Value), n.cfg.MaxValueSize)
	}
	if m.Version == 0 {
		return errorf(ErrInvalidArgument, "mutation without a version")
	}
	return nil
}

// applyStreamed applies entries a peer streamed or handed over (no grace
// rule), moving the clock past their versions.
func (n *Node) applyStreamed(ctx context.Context, es []lsm.Entry) error {
	for _, e := range es {
		n.hlc.Observe(e.Version)
	}
	return n.ae.ApplyStream(ctx, es)
}

// repairStatus maps antientropy errors to gRPC codes.
func repairStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, antientropy.ErrInvalidRanges), errors.Is(err, antientropy.ErrInvalidRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, antientropy.ErrNoTree):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, antientropy.ErrTooLarge):
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return toStatus(err)
}

// repairError maps a Repair service status back to the antientropy error
// the initiator acts on.
func repairError(err error) error {
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch s.Code() {
	case codes.FailedPrecondition:
		return fmt.Errorf("%w: %s", antientropy.ErrNoTree, s.Message())
	case codes.ResourceExhausted:
		return fmt.Errorf("%w: %s", antientropy.ErrTooLarge, s.Message())
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %s", antientropy.ErrInvalidRequest, s.Message())
	}
	return fromStatus(err)
}

// repairServer serves the node's Local to peers.
type repairServer struct {
	kvv1.UnimplementedRepairServer
	n *Node
}

func (s *repairServer) Prepare(ctx context.Context, req *kvv1.PrepareRequest) (*kvv1.PrepareResponse, error) {
	roots, err := s.n.ae.Prepare(ctx, rangesFromPB(req.Ranges), int(min(req.Depth, math.MaxInt32)))
	if err != nil {
		return nil, repairStatus(err)
	}
	return &kvv1.PrepareResponse{Roots: roots}, nil
}

func (s *repairServer) Hashes(ctx context.Context, req *kvv1.HashesRequest) (*kvv1.HashesResponse, error) {
	if req.Range == nil {
		return nil, status.Error(codes.InvalidArgument, "hashes: missing range")
	}
	nodes := make([]antientropy.NodeIndex, len(req.Nodes))
	for i, x := range req.Nodes {
		nodes[i] = antientropy.NodeIndex(x)
	}
	h, err := s.n.ae.Hashes(ctx, rangeFromPB(req.Range), nodes)
	if err != nil {
		return nil, repairStatus(err)
	}
	return &kvv1.HashesResponse{Hashes: h}, nil
}

func (s *repairServer) LeafDigests(ctx context.Context, req *kvv1.LeafDigestsRequest) (*kvv1.LeafDigestsResponse, error) {
	sets := make([]antientropy.LeafSet, len(req.Sets))
	for i, ls := range req.Sets {
		if ls.GetRange() == nil {
			return nil, status.Error(codes.InvalidArgument, "leaf digests: missing range")
		}
		sets[i].Range = rangeFromPB(ls.Range)
		sets[i].Leaves = make([]int, len(ls.Leaves))
		for j, l := range ls.Leaves {
			sets[i].Leaves[j] = int(l)
		}
	}
	ds, err := s.n.ae.LeafDigests(ctx, int(min(req.Depth, math.MaxInt32)), sets)
	if err != nil {
		return nil, repairStatus(err)
	}
	return &kvv1.LeafDigestsResponse{Digests: antientropy.AppendDigests(nil, ds)}, nil
}

func (s *repairServer) Fetch(ctx context.Context, req *kvv1.FetchRequest) (*kvv1.FetchResponse, error) {
	for _, k := range req.Keys {
		if err := s.n.validateKey(k); err != nil {
			return nil, toStatus(err)
		}
	}
	es, done, err := s.n.ae.Fetch(ctx, req.Keys)
	if err != nil {
		return nil, repairStatus(err)
	}
	return &kvv1.FetchResponse{Entries: entriesToPB(es), Done: uint32(done)}, nil
}

func (s *repairServer) Push(ctx context.Context, req *kvv1.PushRequest) (*kvv1.PushResponse, error) {
	es, err := s.n.entriesFromPB(req.Entries)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.n.ae.Push(ctx, es); err != nil {
		return nil, repairStatus(err)
	}
	return &kvv1.PushResponse{}, nil
}

func (s *repairServer) Stream(req *kvv1.StreamRequest, stream grpc.ServerStreamingServer[kvv1.StreamBatch]) error {
	var after []byte
	if len(req.StartAfter) > 0 {
		after = req.StartAfter
	}
	err := s.n.ae.Stream(stream.Context(), rangesFromPB(req.Ranges), after, req.MinVersion, func(es []lsm.Entry) error {
		return stream.Send(&kvv1.StreamBatch{Entries: entriesToPB(es)})
	})
	return repairStatus(err)
}

func (s *repairServer) Ingest(ctx context.Context, req *kvv1.IngestRequest) (*kvv1.IngestResponse, error) {
	es, err := s.n.entriesFromPB(req.Entries)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.n.applyStreamed(ctx, es); err != nil {
		return nil, toStatus(err)
	}
	return &kvv1.IngestResponse{}, nil
}

// grpcPeer is another node's Local, through its Repair service.
type grpcPeer struct {
	c kvv1.RepairClient
}

var _ antientropy.Peer = (*grpcPeer)(nil)

func (p *grpcPeer) Prepare(ctx context.Context, ranges []ring.Range, depth int) ([]uint64, error) {
	req := &kvv1.PrepareRequest{Depth: uint32(depth)}
	for _, r := range ranges {
		req.Ranges = append(req.Ranges, rangeToPB(r))
	}
	resp, err := p.c.Prepare(ctx, req)
	if err != nil {
		return nil, repairError(err)
	}
	if len(resp.Roots) != len(ranges) {
		return nil, fmt.Errorf("node: repair peer answered %d roots for %d ranges", len(resp.Roots), len(ranges))
	}
	return resp.Roots, nil
}

func (p *grpcPeer) Hashes(ctx context.Context, r ring.Range, nodes []antientropy.NodeIndex) ([]uint64, error) {
	req := &kvv1.HashesRequest{Range: rangeToPB(r), Nodes: make([]uint32, len(nodes))}
	for i, x := range nodes {
		req.Nodes[i] = uint32(x)
	}
	resp, err := p.c.Hashes(ctx, req)
	if err != nil {
		return nil, repairError(err)
	}
	if len(resp.Hashes) != len(nodes) {
		return nil, fmt.Errorf("node: repair peer answered %d hashes for %d nodes", len(resp.Hashes), len(nodes))
	}
	return resp.Hashes, nil
}

func (p *grpcPeer) LeafDigests(ctx context.Context, depth int, sets []antientropy.LeafSet) ([]antientropy.KeyDigest, error) {
	req := &kvv1.LeafDigestsRequest{Depth: uint32(depth)}
	for _, s := range sets {
		ls := &kvv1.LeafSet{Range: rangeToPB(s.Range), Leaves: make([]uint32, len(s.Leaves))}
		for i, l := range s.Leaves {
			ls.Leaves[i] = uint32(l)
		}
		req.Sets = append(req.Sets, ls)
	}
	resp, err := p.c.LeafDigests(ctx, req)
	if err != nil {
		return nil, repairError(err)
	}
	return antientropy.DecodeDigests(resp.Digests)
}

func (p *grpcPeer) Fetch(ctx context.Context, keys [][]byte) ([]lsm.Entry, int, error) {
	resp, err := p.c.Fetch(ctx, &kvv1.FetchRequest{Keys: keys})
	if err != nil {
		return nil, 0, repairError(err)
	}
	if int(resp.Done) > len(keys) || (len(keys) > 0 && resp.Done == 0) || len(resp.Entries) > int(resp.Done) {
		return nil, 0, fmt.Errorf("node: repair peer answered %d entries, done %d, for %d keys", len(resp.Entries), resp.Done, len(keys))
	}
	es := make([]lsm.Entry, len(resp.Entries))
	for i, m := range resp.Entries {
		es[i] = entryFromPB(m)
	}
	return es, int(resp.Done), nil
}

func (p *grpcPeer) Push(ctx context.Context, entries []lsm.Entry) error {
	_, err := p.c.Push(ctx, &kvv1.PushRequest{Entries: entriesToPB(entries)})
	return repairError(err)
}
