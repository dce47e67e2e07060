package node

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
)

// A session (KV.Session, kv.proto) carries a client's Put, Get and Delete
// calls on one gRPC stream. Each call runs as the unary method would (the
// same validation, in-flight bound, request timeout, metrics and errors)
// on a worker of the session; a sender sends the answers that have
// finished since its last send as one message. A unary call costs the
// node an HTTP/2 stream, its header and trailer frames and a stream worker;
// on QUORUM gets of 10 KiB at 64 clients that was a third of a node's CPU.

const (
	// sessionWorkers is how many calls of one session run at once before
	// the session starts a goroutine per call.
	sessionWorkers = 16
	// maxSessionPending bounds the calls of a session received and not
	// yet answered: at the bound the session stops reading, and HTTP/2
	// flow control holds the client's sends.
	maxSessionPending = 1024
	// maxSessionAnswerBytes bounds the answers of one message (one answer
	// may exceed it: a message holds at least one).
	maxSessionAnswerBytes = 1 << 20
)

// Session is part of the kvv1.KVServer interface.
func (s *kvServer) Session(stream kvv1.KV_SessionServer) error {
	ctx := stream.Context()
	out := newSessionSender(stream)
	defer out.close()
	in, recvErr := receive(ctx, func() (*kvv1.SessionRequest, error) {
		req, err := stream.Recv()
		if err == nil {
			if bad, ok := s.codec.bad.LoadAndDelete(req); ok {
				return nil, status.Errorf(codes.InvalidArgument, "malformed %s message: %v", kvv1.KV_Session_FullMethodName, bad)
			}
		}
		return req, err
	}, 0)
	pending := make(chan struct{}, maxSessionPending)
	var calls sync.WaitGroup
	defer calls.Wait() // no Send after the handler returns
	work := make(chan *kvv1.SessionCall)
	defer close(work)
	serve := func(c *kvv1.SessionCall) {
		r := s.call(ctx, c)
		out.add(r, func() { <-pending; calls.Done() })
	}
	for range sessionWorkers {
		go func() {
			for c := range work {
				serve(c)
			}
		}()
	}
	for {
		select {
		case req, ok := <-in:
			if !ok {
				if err := recvErr(); err != nil {
					return err
				}
				calls.Wait()
				return out.err()
			}
			s.n.m.sessionCalls.Add(float64(len(req.Calls)))
			for _, c := range req.Calls {
				select {
				case pending <- struct{}{}:
				case <-ctx.Done():
					return ctx.Err()
				}
				calls.Add(1)
				select {
				case work <- c:
				default: // every worker is busy
					go serve(c)
				}
			}
		case <-s.n.drain:
			// Shutting down: the calls received are answered, the
			// client's next calls go to a new session on another node.
			calls.Wait()
			return out.err()
		}
	}
}

// call runs one call of a session and returns its answer.
func (s *kvServer) call(ctx context.Context, c *kvv1.SessionCall) *kvv1.SessionResult {
	if c.TimeoutMicros > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(min(c.TimeoutMicros, uint64(time.Hour/time.Microsecond)))*time.Microsecond)
		defer cancel()
	}
	r := &kvv1.SessionResult{Id: c.Id}
	var err error
	switch op := c.Call.(type) {
	case *kvv1.SessionCall_Put:
		var resp *kvv1.PutResponse
		if resp, err = s.Put(ctx, op.Put); err == nil {
			r.Answer = &kvv1.SessionResult_Put{Put: resp}
		}
	case *kvv1.SessionCall_Get:
		var resp *kvv1.GetResponse
		if resp, err = s.Get(ctx, op.Get); err == nil {
			r.Answer = &kvv1.SessionResult_Get{Get: resp}
		}
	case *kvv1.SessionCall_Delete:
		var resp *kvv1.DeleteResponse
		if resp, err = s.Delete(ctx, op.Delete); err == nil {
			r.Answer = &kvv1.SessionResult_Delete{Delete: resp}
		}
	default:
		err = status.Errorf(codes.InvalidArgument, "session call %d: no put, get or delete", c.Id)
	}
	if err != nil {
		st := status.Convert(err)
		r.Code, r.Message = int32(st.Code()), st.Message()
	}
	return r
}

// sessionSender sends a session's answers: what has finished since its
// last send goes as one message.
type sessionSender struct {
	stream kvv1.KV_SessionServer
	wake   chan struct{} // capacity 1: answers are queued
	done   chan struct{} // closed when the sender has stopped

	mu      sync.Mutex
	queue   []*kvv1.SessionResult
	release []func()
	closed  bool
	sendErr error
}

func newSessionSender(stream kvv1.KV_SessionServer) *sessionSender {
	o := &sessionSender{stream: stream, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go o.run()
	return o
}

// add queues r; release runs once r is sent (or can no longer be).
func (o *sessionSender) add(r *kvv1.SessionResult, release func()) {
	o.mu.Lock()
	if o.closed || o.sendErr != nil {
		o.mu.Unlock()
		release()
		return
	}
	o.queue = append(o.queue, r)
	o.release = append(o.release, release)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *sessionSender) run() {
	defer close(o.done)
	for {
		<-o.wake
		for {
			o.mu.Lock()
			if len(o.queue) == 0 {
				closed := o.closed
				o.mu.Unlock()
				if closed {
					return
				}
				break
			}
			n, size := 0, 0
			for n < len(o.queue) && (n == 0 || size+sessionResultSize(o.queue[n]) <= maxSessionAnswerBytes) {
				size += sessionResultSize(o.queue[n])
				n++
			}
			batch := &kvv1.SessionResponse{Results: o.queue[:n:n]}
			rel := o.release[:n:n]
			o.queue, o.release = o.queue[n:], o.release[n:]
			failed := o.sendErr != nil
			o.mu.Unlock()
			var err error
			if !failed {
				err = o.stream.Send(batch)
			}
			for _, f := range rel {
				f()
			}
			if err != nil {
				o.mu.Lock()
				o.sendErr = err
				o.mu.Unlock()
			}
		}
	}
}

func sessionResultSize(r *kvv1.SessionResult) int {
	if g, ok := r.Answer.(*kvv1.SessionResult_Get); ok {
		return len(g.Get.Value) + 32
	}
	return len(r.Message) + 32
}

// close stops the sender once it has sent what is queued.
func (o *sessionSender) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	<-o.done
}

// err is the first Send error.
func (o *sessionSender) err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sendErr
}
