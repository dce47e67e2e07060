package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
)

// Put, Get and Delete travel on sessions (KV.Session, api/kv/v1/kv.proto):
// one stream per node, on a connection of its own, that carries many
// calls, each tagged with an id and answered by it. A call goes to the
// next session round-robin, skipping the nodes whose session cannot be
// opened (a node down). A call pending on a session whose stream breaks
// fails with ErrUnavailable; like a unary call cut off, it may or may not
// have been applied. Against nodes without KV.Session (UNIMPLEMENTED), the
// client falls back to unary calls.

const (
	// maxSessionCalls and maxSessionBytes bound one message of a session.
	maxSessionCalls = 128
	maxSessionBytes = 2 << 20
)

// sessionResult is the answer to one call.
type sessionResult struct {
	r   *kvv1.SessionResult
	err error // the stream broke
}

// session is the client's end of KV.Session with one node.
type session struct {
	addr string
	kv   kvv1.KVClient

	openMu sync.Mutex    // serialises opening
	wake   chan struct{} // capacity 1: calls are queued
	stop   chan struct{} // closed by close

	mu     sync.Mutex
	st     *sessionStream // nil: not open
	nextID uint64
	closed bool
}

// sessionStream is one open stream of a session. Its calls, queued and
// pending, are its own: when it breaks they fail, and a new stream starts
// empty.
type sessionStream struct {
	stream kvv1.KV_SessionClient
	cancel context.CancelFunc

	// Guarded by the session's mu.
	queue   []*kvv1.SessionCall           // not yet sent
	pending map[uint64]chan sessionResult // sent or queued, not answered
}

func newSession(addr string, cc *grpc.ClientConn) *session {
	s := &session{addr: addr, kv: kvv1.NewKVClient(cc), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	go s.sendLoop()
	return s
}

// errNoSession reports that a node has no KV.Session (an older node).
var errNoSession = errors.New("tierkv: node has no sessions")

// open returns the session's stream, opening one if there is none.
func (s *session) open(ctx context.Context) (*sessionStream, error) {
	s.mu.Lock()
	st, closed := s.st, s.closed
	s.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%w: client closed", ErrUnavailable)
	}
	if st != nil {
		return st, nil
	}
	s.openMu.Lock()
	defer s.openMu.Unlock()
	s.mu.Lock()
	st = s.st
	s.mu.Unlock()
	if st != nil {
		return st, nil
	}
	sctx, cancel := context.WithCancel(context.Background())
	// NewStream waits while the connection is being set up, within ctx.
	stop := context.AfterFunc(ctx, cancel)
	stream, err := s.kv.Session(sctx)
	if !stop() || err != nil {
		cancel()
		if err == nil {
			err = ctx.Err()
		}
		if status.Code(err) == codes.Unimplemented {
			return nil, errNoSession
		}
		return nil, convert(err)
	}
	st = &sessionStream{stream: stream, cancel: cancel, pending: map[uint64]chan sessionResult{}}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("%w: client closed", ErrUnavailable)
	}
	s.st = st
	s.mu.Unlock()
	go s.recvLoop(st)
	return st, nil
}

// do sends c on the session and waits for its answer (or ctx).
func (s *session) do(ctx context.Context, c *kvv1.SessionCall) (*kvv1.SessionResult, error) {
	if _, err := s.open(ctx); err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		c.TimeoutMicros = uint64(max(time.Until(d), time.Microsecond) / time.Microsecond)
	}
	done := make(chan sessionResult, 1)
	s.mu.Lock()
	st := s.st
	if st == nil { // broke since open
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: session with %s ended", ErrUnavailable, s.addr)
	}
	s.nextID++
	c.Id = s.nextID
	st.pending[c.Id] = done
	st.queue = append(st.queue, c)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		if r.r.Code != int32(codes.OK) {
			return nil, convert(status.Error(codes.Code(r.r.Code), r.r.Message))
		}
		return r.r, nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(st.pending, c.Id) // a late answer is dropped
		s.mu.Unlock()
		return nil, convert(status.FromContextError(ctx.Err()).Err())
	}
}

// sendLoop sends what has queued since its last send as one message.
func (s *session) sendLoop() {
	for {
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
		for {
			s.mu.Lock()
			st := s.st
			if st == nil || len(st.queue) == 0 {
				s.mu.Unlock()
				break
			}
			n, size := 0, 0
			for n < len(st.queue) && n < maxSessionCalls && (n == 0 || size+callSize(st.queue[n]) <= maxSessionBytes) {
				size += callSize(st.queue[n])
				n++
			}
			req := &kvv1.SessionRequest{Calls: st.queue[:n:n]}
			st.queue = st.queue[n:]
			s.mu.Unlock()
			if err := st.stream.Send(req); err != nil {
				// Send reports io.EOF when the stream ended; Recv has
				// the status.
				s.broke(st, err)
			}
		}
	}
}

func callSize(c *kvv1.SessionCall) int {
	switch op := c.Call.(type) {
	case *kvv1.SessionCall_Put:
		return len(op.Put.Key) + len(op.Put.Value) + 32
	case *kvv1.SessionCall_Get:
		return len(op.Get.Key) + 32
	case *kvv1.SessionCall_Delete:
		return len(op.Delete.Key) + 32
	}
	return 32
}

// recvLoop delivers the answers of st until it ends.
func (s *session) recvLoop(st *sessionStream) {
	for {
		resp, err := st.stream.Recv()
		if err != nil {
			s.broke(st, err)
			return
		}
		s.mu.Lock()
		for _, r := range resp.Results {
			if done, ok := st.pending[r.Id]; ok {
				delete(st.pending, r.Id)
				done <- sessionResult{r: r}
			}
		}
		s.mu.Unlock()
	}
}

// broke ends st: every call pending on the session fails, and the next
// call opens a new stream.
func (s *session) broke(st *sessionStream, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st != st {
		return // already ended
	}
	st.cancel()
	s.st = nil
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: session with %s ended", ErrUnavailable, s.addr)
	} else if e := convert(err); errors.Is(e, ErrInvalidArgument) || errors.Is(e, ErrResourceExhausted) {
		err = e
	} else {
		err = fmt.Errorf("%w: session with %s broke: %v", ErrUnavailable, s.addr, err)
	}
	for id, done := range st.pending {
		done <- sessionResult{err: err}
		delete(st.pending, id)
	}
	st.queue = nil
}

func (s *session) close() {
	s.mu.Lock()
	s.closed = true
	st := s.st
	s.mu.Unlock()
	if st != nil {
		s.broke(st, fmt.Errorf("%w: client closed", ErrUnavailable))
	}
	close(s.stop)
}

// sessions are a client's sessions, one per node.
type sessions struct {
	all   []*session
	ccs   []*grpc.ClientConn
	next  atomic.Uint64
	unary atomic.Bool // a node has no sessions: use unary calls
}

// do runs c on the next session that opens, starting round-robin.
func (ss *sessions) do(ctx context.Context, c *kvv1.SessionCall) (*kvv1.SessionResult, error) {
	start := ss.next.Add(1)
	var err error
	for i := range uint64(len(ss.all)) {
		s := ss.all[(start+i)%uint64(len(ss.all))]
		if _, err = s.open(ctx); err == nil {
			return s.do(ctx, c)
		}
		if errors.Is(err, errNoSession) {
			ss.unary.Store(true)
			return nil, err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

func (ss *sessions) close() error {
	var errs []error
	for i, s := range ss.all {
		s.close()
		errs = append(errs, ss.ccs[i].Close())
	}
	return errors.Join(errs...)
}
