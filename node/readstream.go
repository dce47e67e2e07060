package node

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/ring"
)

// Replica reads travel on a pipe (pipe.go) per replica, on
// Replica.ReadStream. The replica serves the requests of a stream
// concurrently, on a few workers that live as long as the stream (a slow
// read, of a value in the object store say, holds up only its own
// request), and answers each by its sequence number.

const (
	// readStreamWorkers is how many requests of one read stream a replica
	// serves at once before it starts a goroutine per request.
	readStreamWorkers = 16
)

type readReq struct {
	key    []byte
	digest bool
	done   chan<- readResult // buffered: the stream never blocks
}

// reads is the pipe of reads from replica id.
func (n *Node) reads(id ring.NodeID) *pipe[*readReq] {
	return n.readPipes.get(n, id, func() pipeKind[*readReq] { return readKind{n: n, id: id} })
}

// readKind is the pipeKind of reads from replica id.
type readKind struct {
	n  *Node
	id ring.NodeID
}

func (readKind) name() string { return "read" }

func (k readKind) open(ctx context.Context, rc kvv1.ReplicaClient) (pipeStream[*readReq], error) {
	st, err := rc.ReadStream(ctx)
	if err != nil {
		return nil, err
	}
	return readStream{k: k, st: st}, nil
}

// size counts a data read as a largest value, so that the answer to a
// message stays within the gRPC message bound.
func (k readKind) size(r *readReq) int {
	if r.digest {
		return len(r.key)
	}
	return len(r.key) + k.n.cfg.MaxValueSize
}

func (k readKind) finish(r *readReq, err error) {
	r.done <- readResult{id: k.id, digest: r.digest, err: err}
}

func (k readKind) sent(int) { k.n.m.readMessages.Inc() }

func (k readKind) broke() { k.n.m.readStreamResets.Inc() }

type readStream struct {
	k  readKind
	st kvv1.Replica_ReadStreamClient
}

func (s readStream) send(seq uint64, reqs []*readReq) error {
	rs := make([]*kvv1.ReadRequest, len(reqs))
	for i, r := range reqs {
		rs[i] = &kvv1.ReadRequest{Key: r.key, Digest: r.digest}
	}
	return s.st.Send(&kvv1.ReadStreamRequest{Seq: seq, Reads: rs})
}

func (s readStream) recv() (uint64, func([]*readReq), error) {
	resp, err := s.st.Recv()
	if err != nil {
		return 0, nil, err
	}
	return resp.Seq, func(reqs []*readReq) {
		if len(resp.Reads) != len(reqs) {
			err := fmt.Errorf("replica %s: %w", s.k.id, errorf(ErrUnavailable, "%d answers to %d reads", len(resp.Reads), len(reqs)))
			for _, r := range reqs {
				s.k.finish(r, err)
			}
			return
		}
		for i, r := range reqs {
			if e := answerError(resp.Errors, i); e != nil && e.Code != int32(codes.OK) {
				s.k.finish(r, fmt.Errorf("replica %s: %w", s.k.id, fromStatus(status.Error(codes.Code(e.Code), e.Message))))
				continue
			}
			res := readResult{id: s.k.id, digest: r.digest}
			if a := resp.Reads[i]; a.Found {
				res.m = a.Mutation
			}
			r.done <- res
		}
	}, nil
}

// sendRead sends a read of key to replica id (not this node) without
// waiting: its answer goes to results. The stream bounds the wait for it
// by replica_timeout.
func (n *Node) sendRead(ctx context.Context, id ring.NodeID, key []byte, digest bool, results chan<- readResult) {
	if n.tp != nil {
		n.goUnary(ctx, func(rctx context.Context) {
			m, err := n.readUnary(rctx, id, key, digest)
			results <- readResult{id: id, m: m, digest: digest, err: err}
		})
		return
	}
	n.reads(id).enqueue(&readReq{key: key, digest: digest, done: results})
}

// readRemote reads key from replica id (not this node) and waits for the
// answer (or ctx).
func (n *Node) readRemote(ctx context.Context, id ring.NodeID, key []byte, digest bool) (*kvv1.Mutation, error) {
	if n.tp != nil {
		return n.readUnary(ctx, id, key, digest)
	}
	done := make(chan readResult, 1)
	n.sendRead(ctx, id, key, digest, done)
	select {
	case r := <-done:
		return r.m, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("replica %s: %w", id, errorf(ErrTimeout, "%v", ctx.Err()))
	}
}

// readUnary reads key from replica id in a call of its own.
func (n *Node) readUnary(ctx context.Context, id ring.NodeID, key []byte, digest bool) (*kvv1.Mutation, error) {
	n.m.readMessages.Inc()
	rc, err := n.peer(id)
	if err != nil {
		return nil, err
	}
	resp, err := rc.Read(ctx, &kvv1.ReadRequest{Key: key, Digest: digest})
	if err != nil {
		return nil, fmt.Errorf("replica %s: %w", id, fromStatus(err))
	}
	if !resp.Found {
		return nil, nil
	}
	return resp.Mutation, nil
}

// ReadStream is part of the kvv1.ReplicaServer interface: it serves the
// reads of one coordinator until the coordinator ends the stream or this
// node drains for shutdown.
func (s *replicaServer) ReadStream(stream kvv1.Replica_ReadStreamServer) error {
	n := s.n
	ctx := stream.Context()
	in, recvErr := receive(ctx, stream.Recv, 0)
	var sendMu sync.Mutex
	var sendErr error
	serve := func(req *kvv1.ReadStreamRequest) {
		resp := n.serveReads(ctx, req)
		sendMu.Lock()
		defer sendMu.Unlock()
		if sendErr == nil {
			sendErr = stream.Send(resp)
		}
	}
	work := make(chan *kvv1.ReadStreamRequest)
	var workers sync.WaitGroup
	defer workers.Wait() // no Send after the handler returns
	defer close(work)
	for range readStreamWorkers {
		workers.Go(func() {
			for req := range work {
				serve(req)
			}
		})
	}
	for {
		select {
		case req, ok := <-in:
			if !ok {
				return recvErr()
			}
			select {
			case work <- req:
			default: // every worker is busy
				workers.Go(func() { serve(req) })
			}
		case <-n.drain:
			return nil
		}
	}
}

// serveReads answers the reads of one ReadStream request.
func (n *Node) serveReads(ctx context.Context, req *kvv1.ReadStreamRequest) *kvv1.ReadStreamResponse {
	if hook := n.readHookForTesting.Load(); hook != nil {
		keys := make([][]byte, len(req.Reads))
		for i, r := range req.Reads {
			keys[i] = r.Key
		}
		(*hook)(ctx, keys)
	}
	resp := &kvv1.ReadStreamResponse{Seq: req.Seq, Reads: make([]*kvv1.ReadResponse, len(req.Reads))}
	for i, r := range req.Reads {
		m, err := n.readLocal(r.Key, r.Digest)
		resp.Reads[i] = &kvv1.ReadResponse{Found: m != nil, Mutation: m}
		if err == nil {
			continue
		}
		if resp.Errors == nil {
			resp.Errors = make([]*kvv1.ApplyError, len(req.Reads))
			for j := range resp.Errors {
				resp.Errors[j] = &kvv1.ApplyError{}
			}
		}
		resp.Errors[i] = applyError(err)
	}
	return resp
}
