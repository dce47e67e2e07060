package node

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/ring"
)

// Replica writes travel on a pipe (pipe.go) per replica, on
// Replica.ApplyStream. The replica applies the requests that arrived during
// its last engine write as one batch (one WAL record, one sync) and answers
// each by its sequence number. A write that fails on its stream (the stream
// broke, or the replica refused it for other reasons than its input) is
// hinted, and its coordinator counts the replica as failed.

const (
	// maxApplyGroupBytes bounds the requests a replica applies as one
	// engine batch.
	maxApplyGroupBytes = 8 << 20
	// applyStreamQueue is how many received requests a replica holds while
	// it applies; beyond, it stops reading and HTTP/2 flow control makes
	// the coordinator's sends wait.
	applyStreamQueue = 256
)

type applyReq struct {
	m    *kvv1.Mutation
	done chan<- error // buffered: the stream never blocks
	// hint: on failure (other than bad input) the stream stores a hint for
	// the replica (a coordinator's write; read repair and hint replay
	// handle their failures themselves).
	hint bool
}

// writes is the pipe of writes to replica id.
func (n *Node) writes(id ring.NodeID) *pipe[*applyReq] {
	return n.writePipes.get(n, id, func() pipeKind[*applyReq] { return writeKind{n: n, id: id} })
}

// writeKind is the pipeKind of writes to replica id.
type writeKind struct {
	n  *Node
	id ring.NodeID
}

func (writeKind) name() string { return "write" }

func (k writeKind) open(ctx context.Context, rc kvv1.ReplicaClient) (pipeStream[*applyReq], error) {
	st, err := rc.ApplyStream(ctx)
	if err != nil {
		return nil, err
	}
	return writeStream{k: k, st: st}, nil
}

func (writeKind) size(r *applyReq) int { return len(r.m.Key) + len(r.m.Value) }

// finish delivers r's result, storing a hint first if r asks for one.
func (k writeKind) finish(r *applyReq, err error) {
	if err != nil && r.hint && !inputError(err) {
		k.n.hints.add(k.id, r.m)
	}
	r.done <- err
}

func (k writeKind) sent(c int) {
	k.n.m.writeMessages.Inc()
	k.n.m.remoteWrites.Add(float64(c))
}

func (k writeKind) broke() { k.n.m.streamResets.Inc() }

type writeStream struct {
	k  writeKind
	st kvv1.Replica_ApplyStreamClient
}

func (s writeStream) send(seq uint64, reqs []*applyReq) error {
	ms := make([]*kvv1.Mutation, len(reqs))
	for i, r := range reqs {
		ms[i] = r.m
	}
	return s.st.Send(&kvv1.ApplyStreamRequest{Seq: seq, Mutations: ms})
}

func (s writeStream) recv() (uint64, func([]*applyReq), error) {
	resp, err := s.st.Recv()
	if err != nil {
		return 0, nil, err
	}
	return resp.Seq, func(reqs []*applyReq) {
		for i, r := range reqs {
			e := answerError(resp.Errors, i)
			if e == nil || e.Code == int32(codes.OK) {
				s.k.finish(r, nil)
				continue
			}
			s.k.finish(r, fmt.Errorf("replica %s: %w", s.k.id, fromStatus(status.Error(codes.Code(e.Code), e.Message))))
		}
	}, nil
}

// inputError reports whether err refuses a mutation for its input, which
// no retry or hint can change.
func inputError(err error) bool {
	k := errorKind(err)
	return k == ErrInvalidArgument || k == ErrTooLarge
}

// sendWrite sends a coordinator's write m to replica id without waiting:
// its result goes to results, and a failure (other than bad input) leaves
// a hint. The stream bounds the wait for the answer by replica_timeout.
func (n *Node) sendWrite(ctx context.Context, id ring.NodeID, m *kvv1.Mutation, results chan<- error) {
	if n.tp != nil {
		n.goUnary(ctx, func(rctx context.Context) {
			err := n.applyUnary(rctx, id, m)
			if err != nil && !inputError(err) {
				n.hints.add(id, m)
			}
			results <- err
		})
		return
	}
	n.writes(id).enqueue(&applyReq{m: m, done: results, hint: true})
}

// goUnary runs call, a unary replica call (tracing on: each has its own
// span), in the background: on ctx's values, not its cancellation (the
// request may return before a replica answers), bounded by replica_timeout.
func (n *Node) goUnary(ctx context.Context, call func(rctx context.Context)) {
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.ReplicaTimeout)
		defer cancel()
		call(rctx)
	}()
}

// applyRemote sends m to replica id and waits for its acknowledgement (or
// ctx).
func (n *Node) applyRemote(ctx context.Context, id ring.NodeID, m *kvv1.Mutation) error {
	if n.tp != nil {
		return n.applyUnary(ctx, id, m)
	}
	done := make(chan error, 1)
	n.writes(id).enqueue(&applyReq{m: m, done: done})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// The write may still land; the caller counts this replica as
		// failed (and hints it), which is safe: replays are idempotent.
		return fmt.Errorf("replica %s: %w", id, errorf(ErrTimeout, "%v", ctx.Err()))
	}
}

// applyUnary sends m to replica id in a call of its own.
func (n *Node) applyUnary(ctx context.Context, id ring.NodeID, m *kvv1.Mutation) error {
	n.m.writeMessages.Inc()
	n.m.remoteWrites.Inc()
	rc, err := n.peer(id)
	if err != nil {
		return err
	}
	if _, err := rc.Apply(ctx, &kvv1.ApplyRequest{Mutation: m}); err != nil {
		return fmt.Errorf("replica %s: %w", id, fromStatus(err))
	}
	return nil
}

// ApplyStream is part of the kvv1.ReplicaServer interface: it applies the
// requests of one coordinator, those that arrived while the previous
// engine write ran as one batch, until the coordinator ends the stream or
// this node drains for shutdown (the coordinator then reconnects
// elsewhere or hints).
func (s *replicaServer) ApplyStream(stream kvv1.Replica_ApplyStreamServer) error {
	n := s.n
	ctx := stream.Context()
	in, recvErr := receive(ctx, stream.Recv, applyStreamQueue)
	for {
		var group []*kvv1.ApplyStreamRequest
		select {
		case req, ok := <-in:
			if !ok {
				return recvErr()
			}
			group = append(group, req)
		case <-n.drain:
			return nil
		}
		size := requestSize(group[0])
	more:
		for size < maxApplyGroupBytes {
			select {
			case req, ok := <-in:
				if !ok {
					break more
				}
				group = append(group, req)
				size += requestSize(req)
			default:
				break more
			}
		}
		for i, errs := range n.applyGroup(ctx, group) {
			if err := stream.Send(&kvv1.ApplyStreamResponse{Seq: group[i].Seq, Errors: errs}); err != nil {
				return err
			}
		}
	}
}

func requestSize(r *kvv1.ApplyStreamRequest) int {
	size := 0
	for _, m := range r.Mutations {
		size += len(m.Key) + len(m.Value)
	}
	return size
}

// applyGroup applies the mutations of a group of requests as one engine
// batch and returns each request's errors (ApplyStreamResponse.errors). If
// the engine refuses the batch for its input, every mutation is applied
// alone, so that one bad mutation fails alone.
func (n *Node) applyGroup(ctx context.Context, group []*kvv1.ApplyStreamRequest) [][]*kvv1.ApplyError {
	if hook := n.applyHookForTesting.Load(); hook != nil {
		(*hook)(ctx)
	}
	out := make([][]*kvv1.ApplyError, len(group))
	var all []*kvv1.Mutation
	for i, r := range group {
		if len(r.Mutations) == 0 {
			out[i] = []*kvv1.ApplyError{applyError(errorf(ErrInvalidArgument, "empty request"))}
			continue
		}
		all = append(all, r.Mutations...)
	}
	if len(all) == 0 {
		return out
	}
	n.m.streamApplies.Inc()
	n.m.streamApplied.Add(float64(len(all)))
	err := n.applyLocalBatch(all)
	if err == nil {
		return out
	}
	if !inputError(err) || len(all) == 1 {
		for i := range group {
			if out[i] == nil {
				out[i] = []*kvv1.ApplyError{applyError(err)}
			}
		}
		return out
	}
	for i, r := range group {
		if out[i] != nil {
			continue
		}
		errs := make([]*kvv1.ApplyError, len(r.Mutations))
		failed := false
		for j, m := range r.Mutations {
			errs[j] = &kvv1.ApplyError{}
			if err := n.applyLocalBatch([]*kvv1.Mutation{m}); err != nil {
				errs[j], failed = applyError(err), true
			}
		}
		if failed {
			out[i] = errs
		}
	}
	return out
}

func applyError(err error) *kvv1.ApplyError {
	st := toStatus(err)
	return &kvv1.ApplyError{Code: int32(status.Code(st)), Message: status.Convert(st).Message()}
}
