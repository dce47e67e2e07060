package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/ring"
)

// A coordinator sends its replica writes and reads on long-lived gRPC
// streams, one per (replica, kind): Replica.ApplyStream (batcher.go) and
// Replica.ReadStream (readstream.go). A stream message costs a DATA frame
// each way, where a unary call also costs a new HTTP/2 stream, its header
// and trailer frames and a server goroutine; on a three-node cluster the
// unary digest read of a QUORUM get cost as much CPU as the rest of the
// get. A pipe is the coordinator's end of such a stream. It batches only
// what queues while it is busy: its sender sends what has queued since its
// last send as one message (an idle pipe sends each request alone, at
// once), and the replica answers each message by its sequence number. A
// message that stays unanswered for replica_timeout fails with a timeout.
// If the stream answered nothing at all since that message was sent, the
// replica looks hung: the stream breaks, every request pending on it fails,
// and the next request opens a new stream. Otherwise only that message
// fails (a slow read of a value in the object store, say), and the stream
// goes on: its late answer is dropped. Opening a stream is bounded by
// replica_timeout too.
//
// With tracing on, every replica call is a unary call instead, so that each
// has its own span (otelgrpc).

const (
	// maxStreamRequest and maxStreamRequestBytes bound one message of a
	// coordinator (a message holds at least one request; the message bound
	// is key and value bounds plus 4 MiB).
	maxStreamRequest      = 128
	maxStreamRequestBytes = 2 << 20
)

// pipeKind is what a pipe carries, writes or reads, to one replica.
type pipeKind[R any] interface {
	// name names the stream in errors: "write" or "read".
	name() string
	open(ctx context.Context, rc kvv1.ReplicaClient) (pipeStream[R], error)
	// size is the bytes of r that count against maxStreamRequestBytes.
	size(r R) int
	// finish delivers r's result: nil (answered) or the error.
	finish(r R, err error)
	// sent counts a message of k requests sent; broke counts a stream
	// that broke.
	sent(k int)
	broke()
}

// pipeStream is one open stream of a pipeKind.
type pipeStream[R any] interface {
	send(seq uint64, reqs []R) error
	// recv waits for the next answer and returns its sequence number and
	// a function that delivers it to the requests of that message.
	recv() (seq uint64, answer func([]R), err error)
}

// pipe sends the requests of one kind of this node, as coordinator, to
// one replica.
type pipe[R any] struct {
	n    *Node
	id   ring.NodeID
	kind pipeKind[R]

	wake chan struct{} // capacity 1: the sender has work

	mu      sync.Mutex
	queue   []R
	started bool // the sender runs
	stopped bool // the sender has stopped (the node is closing)
	conn    *pipeConn[R]
}

// pipeConn is one open stream and the messages sent on it that await their
// answer.
type pipeConn[R any] struct {
	st     pipeStream[R]
	cancel context.CancelFunc
	seq    uint64 // the last sequence number sent (the sender's)

	mu       sync.Mutex
	pending  map[uint64]*pendingMessage[R]
	answered uint64 // answers received
	err      error  // non-nil once the stream is broken
}

type pendingMessage[R any] struct {
	reqs  []R
	timer *time.Timer
	// answered is the stream's answer count when the message was sent.
	answered uint64
}

// pipes holds a node's pipes of one kind, by replica.
type pipes[R any] struct {
	mu sync.Mutex
	m  map[ring.NodeID]*pipe[R]
}

// get returns the pipe to replica id, making it with kind if there is none.
func (ps *pipes[R]) get(n *Node, id ring.NodeID, kind func() pipeKind[R]) *pipe[R] {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.m == nil {
		ps.m = map[ring.NodeID]*pipe[R]{}
	}
	p, ok := ps.m[id]
	if !ok {
		p = &pipe[R]{n: n, id: id, kind: kind(), wake: make(chan struct{}, 1)}
		ps.m[id] = p
	}
	return p
}

// enqueue queues r for the sender; the kind delivers its result.
func (p *pipe[R]) enqueue(r R) {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		p.kind.finish(r, ErrClosed)
		return
	}
	p.queue = append(p.queue, r)
	if !p.started {
		p.started = true
		p.n.bg.Add(1)
		go p.sendLoop()
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// sendLoop sends the queue until the node stops.
func (p *pipe[R]) sendLoop() {
	defer p.n.bg.Done()
	for {
		select {
		case <-p.n.stop:
			p.mu.Lock()
			p.stopped = true
			queue, c := p.queue, p.conn
			p.queue, p.conn = nil, nil
			p.mu.Unlock()
			for _, r := range queue {
				p.kind.finish(r, ErrClosed)
			}
			if c != nil {
				c.fail(p, ErrClosed)
			}
			return
		case <-p.wake:
		}
		// NB: the node stopping ends the sending between messages too;
		// the top of the loop fails what is left.
		for !p.n.stopping() {
			reqs := p.take()
			if len(reqs) == 0 {
				break
			}
			p.send(reqs)
		}
	}
}

// take removes one message's worth of requests from the queue.
func (p *pipe[R]) take() []R {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, size := 0, 0
	for k < len(p.queue) && k < maxStreamRequest && (k == 0 || size < maxStreamRequestBytes) {
		size += p.kind.size(p.queue[k])
		k++
	}
	reqs := p.queue[:k:k]
	p.queue = p.queue[k:]
	return reqs
}

func (p *pipe[R]) send(reqs []R) {
	if hook := p.n.pipeSendHookForTesting.Load(); hook != nil {
		(*hook)(p.kind.name(), p.id, len(reqs))
	}
	c, err := p.connect()
	if err != nil {
		for _, r := range reqs {
			p.kind.finish(r, err)
		}
		return
	}
	c.seq++
	seq := c.seq
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		for _, r := range reqs {
			p.kind.finish(r, err)
		}
		return
	}
	m := &pendingMessage[R]{reqs: reqs, answered: c.answered}
	c.pending[seq] = m
	m.timer = time.AfterFunc(p.n.cfg.ReplicaTimeout, func() { p.expire(c, seq, m) })
	c.mu.Unlock()
	p.kind.sent(len(reqs))
	if err := c.st.send(seq, reqs); err != nil {
		// NB: Send reports io.EOF for a stream that ended; the reason
		// comes to the receiver, which fails the stream with it first
		// unless this does.
		c.fail(p, fmt.Errorf("replica %s: %w", p.id, fromStatus(err)))
	}
}

// expire fails message m (sequence number seq) of stream c, unanswered
// for replica_timeout: alone if c answered anything since m was sent,
// otherwise with the whole stream.
func (p *pipe[R]) expire(c *pipeConn[R], seq uint64, m *pendingMessage[R]) {
	err := fmt.Errorf("replica %s: %w", p.id, errorf(ErrTimeout, "no answer within replica_timeout %v", p.n.cfg.ReplicaTimeout))
	c.mu.Lock()
	if c.pending[seq] != m { // answered as the timer fired, or failed
		c.mu.Unlock()
		return
	}
	p.n.m.messageTimeouts.WithLabelValues(p.kind.name()).Inc()
	if c.answered == m.answered {
		c.mu.Unlock()
		c.fail(p, err)
		return
	}
	delete(c.pending, seq)
	c.mu.Unlock()
	for _, r := range m.reqs {
		p.kind.finish(r, err)
	}
}

// connect returns the open stream, or opens one.
func (p *pipe[R]) connect() (*pipeConn[R], error) {
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c != nil && !c.broken() {
		return c, nil
	}
	rc, err := p.n.peer(p.id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	// NB: the stream lives on ctx, so the bound on opening it is a timer
	// rather than a deadline.
	opening := time.AfterFunc(p.n.cfg.ReplicaTimeout, cancel)
	st, err := p.kind.open(ctx, rc)
	if !opening.Stop() { // the timer fired: ctx is done
		cancel()
		return nil, fmt.Errorf("replica %s: %w", p.id, errorf(ErrTimeout, "the %s stream did not open within replica_timeout %v", p.kind.name(), p.n.cfg.ReplicaTimeout))
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("replica %s: %w", p.id, fromStatus(err))
	}
	c = &pipeConn[R]{st: st, cancel: cancel, pending: map[uint64]*pendingMessage[R]{}}
	p.mu.Lock()
	p.conn = c
	p.mu.Unlock()
	p.n.bg.Add(1)
	go func() {
		defer p.n.bg.Done()
		p.recvLoop(c)
	}()
	return c, nil
}

// recvLoop delivers the replica's answers until the stream ends.
func (p *pipe[R]) recvLoop(c *pipeConn[R]) {
	for {
		seq, answer, err := c.st.recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errorf(ErrUnavailable, "the replica closed the %s stream", p.kind.name())
			} else {
				err = fromStatus(err)
			}
			c.fail(p, fmt.Errorf("replica %s: %w", p.id, err))
			return
		}
		c.mu.Lock()
		c.answered++
		m := c.pending[seq]
		delete(c.pending, seq)
		c.mu.Unlock()
		if m == nil {
			continue // timed out already
		}
		m.timer.Stop()
		answer(m.reqs)
	}
}

func (c *pipeConn[R]) broken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// fail breaks the stream: its pending requests fail with err. The first
// failure of a stream counts as a reset unless the node is closing.
func (c *pipeConn[R]) fail(p *pipe[R], err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.cancel()
	if !errors.Is(err, ErrClosed) {
		p.kind.broke()
	}
	for _, m := range pending {
		m.timer.Stop()
		for _, r := range m.reqs {
			p.kind.finish(r, err)
		}
	}
}

// answerError returns the error of request i of a message from the errors
// of its answer (ApplyStreamResponse.errors,
// ReadStreamResponse.errors): none, one for all, or one per request.
func answerError(errs []*kvv1.ApplyError, i int) *kvv1.ApplyError {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	if i < len(errs) {
		return errs[i]
	}
	return nil
}

// receive reads the requests of a replica-side stream into a channel of
// capacity queue until Recv fails or ctx ends (a full channel stops the
// reading, and HTTP/2 flow control then holds the coordinator's sends).
// Once the channel is closed, err reports why: nil for the coordinator
// ending the stream.
func receive[T any](ctx context.Context, recv func() (T, error), queue int) (_ <-chan T, err func() error) {
	in := make(chan T, queue)
	var recvErr error
	go func() {
		defer close(in)
		for {
			req, err := recv()
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
	return in, func() error {
		if errors.Is(recvErr, io.EOF) {
			return nil
		}
		return recvErr
	}
}
