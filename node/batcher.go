package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/ring"
)

// Replica writes travel on one long-lived gRPC stream per (coordinator,
// replica) pair, Replica.ApplyStream, instead of a call per write: a
// stream message costs a DATA frame each way, where a unary call also
// costs a new HTTP/2 stream, its header and trailer frames and a server
// goroutine. Both ends batch only what queues while they are busy. The
// coordinator's sender sends what has queued since its last send as one
// request (an idle coordinator sends each write alone, at once); the
// replica applies the requests that arrived during its last engine write
// as one batch (one WAL record, one sync) and answers each by its sequence
// number. A request that stays unanswered for replica_timeout breaks its
// stream: the writes still pending on it fail (their coordinators hint
// them) and the next write opens a new one.
//
// With tracing on, every replica write is a unary Apply call instead, so
// that each has its own span (otelgrpc).

const (
	// maxStreamRequest and maxStreamRequestBytes bound one request of a
	// coordinator (a request holds at least one mutation; the message bound
	// is key and value bounds plus 4 MiB).
	maxStreamRequest      = 128
	maxStreamRequestBytes = 2 << 20
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

// replicaStream sends the writes of this node, as coordinator, to one
// replica.
type replicaStream struct {
	n  *Node
	id ring.NodeID

	wake chan struct{} // capacity 1: the sender has work

	mu      sync.Mutex
	queue   []*applyReq
	started bool // the sender runs
	stopped bool // the sender has stopped (the node is closing)
	conn    *streamConn
}

// streamConn is one ApplyStream and the requests sent on it that await
// their answer.
type streamConn struct {
	st     kvv1.Replica_ApplyStreamClient
	cancel context.CancelFunc
	seq    uint64 // the last sequence number sent (the sender's)

	mu      sync.Mutex
	pending map[uint64]*pendingRequest
	err     error // non-nil once the stream is broken
}

type pendingRequest struct {
	reqs  []*applyReq
	timer *time.Timer
}

// replicaStream returns the stream of replica id.
func (n *Node) replicaStream(id ring.NodeID) *replicaStream {
	n.streams.Lock()
	defer n.streams.Unlock()
	if n.streams.m == nil {
		n.streams.m = map[ring.NodeID]*replicaStream{}
	}
	s, ok := n.streams.m[id]
	if !ok {
		s = &replicaStream{n: n, id: id, wake: make(chan struct{}, 1)}
		n.streams.m[id] = s
	}
	return s
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
		n.bg.Add(1)
		go func() {
			defer n.bg.Done()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.ReplicaTimeout)
			defer cancel()
			err := n.applyUnary(rctx, id, m)
			if err != nil && !inputError(err) {
				n.hints.add(id, m)
			}
			results <- err
		}()
		return
	}
	n.replicaStream(id).enqueue(&applyReq{m: m, done: results, hint: true})
}

// applyRemote sends m to replica id and waits for its acknowledgement (or
// ctx).
func (n *Node) applyRemote(ctx context.Context, id ring.NodeID, m *kvv1.Mutation) error {
	if n.tp != nil {
		return n.applyUnary(ctx, id, m)
	}
	done := make(chan error, 1)
	n.replicaStream(id).enqueue(&applyReq{m: m, done: done})
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

// enqueue queues r for the sender; r.done gets its result.
func (s *replicaStream) enqueue(r *applyReq) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		s.finish(r, ErrClosed)
		return
	}
	s.queue = append(s.queue, r)
	if !s.started {
		s.started = true
		s.n.bg.Add(1)
		go s.sendLoop()
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// finish delivers r's result, storing a hint first if r asks for one.
func (s *replicaStream) finish(r *applyReq, err error) {
	if err != nil && r.hint && !inputError(err) {
		s.n.hints.add(s.id, r.m)
	}
	r.done <- err
}

// sendLoop sends the queue until the node stops.
func (s *replicaStream) sendLoop() {
	defer s.n.bg.Done()
	for {
		select {
		case <-s.n.stop:
			s.mu.Lock()
			s.stopped = true
			queue, c := s.queue, s.conn
			s.queue, s.conn = nil, nil
			s.mu.Unlock()
			for _, r := range queue {
				s.finish(r, ErrClosed)
			}
			if c != nil {
				c.fail(s, ErrClosed)
			}
			return
		case <-s.wake:
		}
		for {
			reqs := s.take()
			if len(reqs) == 0 {
				break
			}
			s.send(reqs)
		}
	}
}

// take removes one request's worth of writes from the queue.
func (s *replicaStream) take() []*applyReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, size := 0, 0
	for k < len(s.queue) && k < maxStreamRequest && (k == 0 || size < maxStreamRequestBytes) {
		size += len(s.queue[k].m.Key) + len(s.queue[k].m.Value)
		k++
	}
	reqs := s.queue[:k:k]
	s.queue = s.queue[k:]
	return reqs
}

func (s *replicaStream) send(reqs []*applyReq) {
	c, err := s.connect()
	if err != nil {
		for _, r := range reqs {
			s.finish(r, err)
		}
		return
	}
	ms := make([]*kvv1.Mutation, len(reqs))
	for i, r := range reqs {
		ms[i] = r.m
	}
	c.seq++
	seq := c.seq
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		for _, r := range reqs {
			s.finish(r, err)
		}
		return
	}
	p := &pendingRequest{reqs: reqs}
	c.pending[seq] = p
	p.timer = time.AfterFunc(s.n.cfg.ReplicaTimeout, func() {
		if c.fail(s, fmt.Errorf("replica %s: %w", s.id, errorf(ErrTimeout, "no answer within replica_timeout %v", s.n.cfg.ReplicaTimeout))) {
			s.n.m.streamResets.Inc()
		}
	})
	c.mu.Unlock()
	s.n.m.writeMessages.Inc()
	s.n.m.remoteWrites.Add(float64(len(reqs)))
	if err := c.st.Send(&kvv1.ApplyStreamRequest{Seq: seq, Mutations: ms}); err != nil {
		// NB: Send reports io.EOF for a stream that ended; the reason
		// comes to the receiver, which fails the stream with it first
		// unless this does.
		if c.fail(s, fmt.Errorf("replica %s: %w", s.id, fromStatus(err))) {
			s.n.m.streamResets.Inc()
		}
	}
}

// connect returns the open stream, or opens one.
func (s *replicaStream) connect() (*streamConn, error) {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil && !c.broken() {
		return c, nil
	}
	rc, err := s.n.peer(s.id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := rc.ApplyStream(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("replica %s: %w", s.id, fromStatus(err))
	}
	c = &streamConn{st: st, cancel: cancel, pending: map[uint64]*pendingRequest{}}
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	s.n.bg.Add(1)
	go func() {
		defer s.n.bg.Done()
		s.recvLoop(c)
	}()
	return c, nil
}

// recvLoop delivers the replica's answers until the stream ends.
func (s *replicaStream) recvLoop(c *streamConn) {
	for {
		resp, err := c.st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errorf(ErrUnavailable, "the replica closed the write stream")
			} else {
				err = fromStatus(err)
			}
			if c.fail(s, fmt.Errorf("replica %s: %w", s.id, err)) {
				s.n.m.streamResets.Inc()
			}
			return
		}
		c.mu.Lock()
		p := c.pending[resp.Seq]
		delete(c.pending, resp.Seq)
		c.mu.Unlock()
		if p == nil {
			continue // failed already
		}
		p.timer.Stop()
		for i, r := range p.reqs {
			var e *kvv1.ApplyError
			switch len(resp.Errors) {
			case 0:
			case 1:
				e = resp.Errors[0]
			default:
				if i < len(resp.Errors) {
					e = resp.Errors[i]
				}
			}
			if e == nil || e.Code == int32(codes.OK) {
				s.finish(r, nil)
				continue
			}
			s.finish(r, fmt.Errorf("replica %s: %w", s.id, fromStatus(status.Error(codes.Code(e.Code), e.Message))))
		}
	}
}

func (c *streamConn) broken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// fail breaks the stream: its pending writes fail with err. It reports
// whether the stream was whole until then.
func (c *streamConn) fail(s *replicaStream, err error) bool {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return false
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.cancel()
	for _, p := range pending {
		p.timer.Stop()
		for _, r := range p.reqs {
			s.finish(r, err)
		}
	}
	return true
}

// ApplyStream is part of the kvv1.ReplicaServer interface: it applies the
// requests of one coordinator, those that arrived while the previous
// engine write ran as one batch, until the coordinator ends the stream or
// this node drains for shutdown (the coordinator then reconnects
// elsewhere or hints).
func (s *replicaServer) ApplyStream(stream kvv1.Replica_ApplyStreamServer) error {
	n := s.n
	ctx := stream.Context()
	in := make(chan *kvv1.ApplyStreamRequest, applyStreamQueue)
	var recvErr error
	go func() {
		defer close(in)
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr = err
				return
			}
			select {
			case in <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var group []*kvv1.ApplyStreamRequest
		select {
		case req, ok := <-in:
			if !ok {
				if errors.Is(recvErr, io.EOF) || recvErr == nil {
					return nil
				}
				return recvErr
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
