package node

import (
	"context"
	"slices"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/ring"
	"github.com/tierkv/tierkv/ring/gossip"
)

// streamWorkers is how many goroutines of a gRPC server run calls. A call
// arriving while all are busy gets a goroutine of its own, which grows its
// stack from scratch (a tenth of a node's CPU at 64 clients with 4
// workers); idle workers cost only their stacks.
const streamWorkers = 64

func (n *Node) newGRPCServer() *grpc.Server {
	codec := newStrictCodec()
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(n.maxMsgSize()),
		grpc.MaxSendMsgSize(n.maxMsgSize()),
		grpc.ForceServerCodecV2(codec),
		grpc.ChainUnaryInterceptor(codec.interceptor),
		// Workers that outlive a call keep their grown stacks.
		grpc.NumStreamWorkers(streamWorkers),
	}
	opts = append(opts, n.tracingServerOptions()...)
	s := grpc.NewServer(opts...)
	kvv1.RegisterKVServer(s, &kvServer{n: n, codec: codec})
	kvv1.RegisterReplicaServer(s, &replicaServer{n: n})
	kvv1.RegisterRepairServer(s, &repairServer{n: n})
	if n.shardSrv != nil {
		n.shardSrv.Register(s)
	}
	n.health = health.NewServer()
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s, n.health)
	reflection.Register(s)
	return s
}

// kvServer is the client API.
type kvServer struct {
	kvv1.UnimplementedKVServer
	n     *Node
	codec strictCodec // for Session's malformed messages
}

func level(c kvv1.Consistency) (Consistency, error) {
	switch c {
	case kvv1.Consistency_CONSISTENCY_UNSPECIFIED:
		return ConsistencyDefault, nil
	case kvv1.Consistency_ONE:
		return One, nil
	case kvv1.Consistency_QUORUM:
		return Quorum, nil
	case kvv1.Consistency_ALL:
		return All, nil
	}
	return 0, errorf(ErrInvalidArgument, "unknown consistency level %d (want ONE, QUORUM or ALL)", c)
}

// begin admits a request: it takes an in-flight slot, decodes the
// consistency level and applies the request deadline. On success the caller
// must call done; on failure err is already a gRPC status and nothing was
// taken.
func (s *kvServer) begin(ctx context.Context, cl kvv1.Consistency) (context.Context, Consistency, func(), error) {
	release, err := s.n.acquire()
	if err != nil {
		return nil, 0, nil, toStatus(err)
	}
	c, err := level(cl)
	if err != nil {
		release()
		return nil, 0, nil, toStatus(err)
	}
	ctx, cancel := s.n.requestContext(ctx)
	return ctx, c, func() { cancel(); release() }, nil
}

// Put is part of the kvv1.KVServer interface.
func (s *kvServer) Put(ctx context.Context, req *kvv1.PutRequest) (*kvv1.PutResponse, error) {
	ctx, c, done, err := s.begin(ctx, req.Consistency)
	if err != nil {
		return nil, err
	}
	defer done()
	v, err := s.n.Put(ctx, req.Key, req.Value, c, req.LastVersion)
	if err != nil {
		return nil, toStatus(err)
	}
	return &kvv1.PutResponse{Version: v}, nil
}

// Get is part of the kvv1.KVServer interface.
func (s *kvServer) Get(ctx context.Context, req *kvv1.GetRequest) (*kvv1.GetResponse, error) {
	ctx, c, done, err := s.begin(ctx, req.Consistency)
	if err != nil {
		return nil, err
	}
	defer done()
	val, v, err := s.n.Get(ctx, req.Key, c)
	if err != nil {
		return nil, toStatus(err)
	}
	return &kvv1.GetResponse{Value: val, Version: v}, nil
}

// Delete is part of the kvv1.KVServer interface.
func (s *kvServer) Delete(ctx context.Context, req *kvv1.DeleteRequest) (*kvv1.DeleteResponse, error) {
	ctx, c, done, err := s.begin(ctx, req.Consistency)
	if err != nil {
		return nil, err
	}
	defer done()
	v, err := s.n.Delete(ctx, req.Key, c, req.LastVersion)
	if err != nil {
		return nil, toStatus(err)
	}
	return &kvv1.DeleteResponse{Version: v}, nil
}

// Topology is part of the kvv1.KVServer interface.
func (s *kvServer) Topology(context.Context, *kvv1.TopologyRequest) (*kvv1.TopologyResponse, error) {
	return s.n.Topology(), nil
}

// Topology describes the ring as this node sees it.
func (n *Node) Topology() *kvv1.TopologyResponse {
	resp := &kvv1.TopologyResponse{ReplicationFactor: uint32(n.cfg.ReplicationFactor)}
	h := xxhash.New()
	members := n.g.Members()
	slices.SortFunc(members, func(a, b gossip.Member) int {
		if a.ID < b.ID {
			return -1
		} else if a.ID > b.ID {
			return 1
		}
		return 0
	})
	var buf [8]byte
	for _, m := range members {
		if m.State == ring.StateLeft {
			continue
		}
		tokens := make([]uint64, len(m.Tokens))
		for i, t := range m.Tokens {
			tokens[i] = uint64(t)
		}
		slices.Sort(tokens)
		h.WriteString(string(m.ID))
		h.Write([]byte{0, byte(m.State)})
		for _, t := range tokens {
			buf = [8]byte{byte(t >> 56), byte(t >> 48), byte(t >> 40), byte(t >> 32), byte(t >> 24), byte(t >> 16), byte(t >> 8), byte(t)}
			h.Write(buf[:])
		}
		resp.Members = append(resp.Members, &kvv1.Member{
			Id: string(m.ID), Zone: m.Zone, State: m.State.String(), Tokens: tokens,
			GrpcAddr: m.RPCAddr, HttpAddr: m.HTTPAddr, Up: n.up(m.ID),
		})
	}
	resp.Epoch = h.Sum64()
	return resp
}

// replicaServer is the internode API.
type replicaServer struct {
	kvv1.UnimplementedReplicaServer
	n *Node
}

// Apply is part of the kvv1.ReplicaServer interface.
func (s *replicaServer) Apply(ctx context.Context, req *kvv1.ApplyRequest) (*kvv1.ApplyResponse, error) {
	if hook := s.n.applyHookForTesting.Load(); hook != nil {
		(*hook)(ctx)
	}
	if err := s.n.applyLocal(req.Mutation); err != nil {
		return nil, toStatus(err)
	}
	return &kvv1.ApplyResponse{}, nil
}

// Read is part of the kvv1.ReplicaServer interface.
func (s *replicaServer) Read(ctx context.Context, req *kvv1.ReadRequest) (*kvv1.ReadResponse, error) {
	if hook := s.n.readHookForTesting.Load(); hook != nil {
		(*hook)(ctx, [][]byte{req.Key})
	}
	m, err := s.n.readLocal(req.Key, req.Digest)
	if err != nil {
		return nil, toStatus(err)
	}
	return &kvv1.ReadResponse{Found: m != nil, Mutation: m}, nil
}
