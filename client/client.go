// Package client is the Go client of tierkv: it talks gRPC to any node of a
// cluster (round-robin over the addresses it is given, skipping nodes it
// cannot reach), which coordinates the request. A ring-aware client that
// sends each request to a replica of its key comes later.
//
//	c, err := client.New([]string{"127.0.0.1:9091", "127.0.0.1:9092"})
//	defer c.Close()
//	v, err := c.Put(ctx, []byte("k"), []byte("v"), client.WithConsistency(client.Quorum))
//	val, v, err := c.Get(ctx, []byte("k"))
//
// A Client remembers the highest version it has seen and sends it with
// every write, so that its later writes win over its earlier ones even
// when they go through different nodes in the same millisecond.
package client

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
)

// Consistency is how many replicas must answer.
type Consistency = kvv1.Consistency

// Consistency levels.
const (
	// Default uses the node's configured default (ONE unless changed).
	Default = kvv1.Consistency_CONSISTENCY_UNSPECIFIED
	One     = kvv1.Consistency_ONE
	Quorum  = kvv1.Consistency_QUORUM
	All     = kvv1.Consistency_ALL
)

// Errors, tested with errors.Is; the wrapped message is the node's.
var (
	// ErrNotFound: the key is absent or deleted.
	ErrNotFound = errors.New("tierkv: not found")
	// ErrInvalidArgument: bad key, value or option; nothing changed.
	ErrInvalidArgument = errors.New("tierkv: invalid argument")
	// ErrResourceExhausted: over a bound (size, in-flight requests, write
	// stall); back off and retry, or send less.
	ErrResourceExhausted = errors.New("tierkv: resource exhausted")
	// ErrUnavailable: too few live replicas, or no node reachable.
	ErrUnavailable = errors.New("tierkv: unavailable")
	// ErrTimeout: the deadline passed before enough replicas answered.
	ErrTimeout = errors.New("tierkv: timeout")
)

// Options configure a Client.
type Options struct {
	// Timeout is the deadline of a call whose context has none. Default 5s.
	Timeout time.Duration
	// DialOptions are added to the gRPC dial options.
	DialOptions []grpc.DialOption
	// Unary sends every Put, Get and Delete as a unary gRPC call of its
	// own instead of on the client's sessions (session.go: one stream per
	// node carrying many calls). Default false.
	Unary bool
}

// Client is a connection to a cluster. It is safe for concurrent use.
type Client struct {
	cc       *grpc.ClientConn
	kv       kvv1.KVClient
	sessions *sessions // nil with Options.Unary
	opts     Options
	last     atomic.Uint64
}

// New returns a client of the nodes at addrs (gRPC host:port). It does not
// connect until the first call.
func New(addrs []string, opts *Options) (*Client, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: no node address", ErrInvalidArgument)
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	r := manual.NewBuilderWithScheme("tierkv")
	var st resolver.State
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(st)
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Reconnect to a restarted node within seconds (grpc's default
		// backoff grows to two minutes).
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second,
		}, MinConnectTimeout: 2 * time.Second}),
	}
	dopts := append(append(base[:len(base):len(base)],
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	), o.DialOptions...)
	cc, err := grpc.NewClient(r.Scheme()+":///tierkv", dopts...)
	if err != nil {
		return nil, err
	}
	c := &Client{cc: cc, kv: kvv1.NewKVClient(cc), opts: o}
	if !o.Unary {
		// A session's connection goes to its node alone.
		c.sessions = &sessions{}
		for _, a := range addrs {
			scc, err := grpc.NewClient("passthrough:///"+a, append(base[:len(base):len(base)], o.DialOptions...)...)
			if err != nil {
				c.Close()
				return nil, err
			}
			c.sessions.ccs = append(c.sessions.ccs, scc)
			c.sessions.all = append(c.sessions.all, newSession(a, scc))
		}
	}
	return c, nil
}

// Close closes the connections; calls pending on sessions fail.
func (c *Client) Close() error {
	err := c.cc.Close()
	if c.sessions != nil {
		err = errors.Join(err, c.sessions.close())
	}
	return err
}

// errNoAnswer: a session's answer to a call lacks the call's result.
var errNoAnswer = fmt.Errorf("%w: session answer without the call's result", ErrUnavailable)

// onSession runs call on a session, unless the client or the nodes use
// unary calls (ok false).
func (c *Client) onSession(ctx context.Context, call *kvv1.SessionCall) (_ *kvv1.SessionResult, ok bool, _ error) {
	if c.sessions == nil || c.sessions.unary.Load() {
		return nil, false, nil
	}
	r, err := c.sessions.do(ctx, call)
	if errors.Is(err, errNoSession) {
		return nil, false, nil
	}
	return r, true, err
}

// CallOption changes one call.
type CallOption func(*call)

type call struct {
	consistency Consistency
	timeout     time.Duration
}

// WithConsistency sets the consistency level of the call.
func WithConsistency(l Consistency) CallOption { return func(c *call) { c.consistency = l } }

// WithTimeout sets the call's deadline (when ctx has an earlier one, that
// one applies).
func WithTimeout(d time.Duration) CallOption { return func(c *call) { c.timeout = d } }

func (c *Client) prepare(ctx context.Context, opts []CallOption) (context.Context, context.CancelFunc, call) {
	cl := call{timeout: c.opts.Timeout}
	for _, o := range opts {
		o(&cl)
	}
	ctx, cancel := context.WithTimeout(ctx, cl.timeout)
	return ctx, cancel, cl
}

func (c *Client) observe(v uint64) {
	for {
		old := c.last.Load()
		if v <= old || c.last.CompareAndSwap(old, v) {
			return
		}
	}
}

// LastVersion returns the highest version the client has seen.
func (c *Client) LastVersion() uint64 { return c.last.Load() }

// Put writes value under key and returns its version.
func (c *Client) Put(ctx context.Context, key, value []byte, opts ...CallOption) (uint64, error) {
	ctx, cancel, cl := c.prepare(ctx, opts)
	defer cancel()
	req := &kvv1.PutRequest{Key: key, Value: value, Consistency: cl.consistency, LastVersion: c.last.Load()}
	var resp *kvv1.PutResponse
	r, ok, err := c.onSession(ctx, &kvv1.SessionCall{Call: &kvv1.SessionCall_Put{Put: req}})
	if ok && err == nil {
		if resp = r.GetPut(); resp == nil {
			err = errNoAnswer
		}
	} else if !ok {
		resp, err = c.kv.Put(ctx, req)
	}
	if err != nil {
		return 0, convert(err)
	}
	c.observe(resp.Version)
	return resp.Version, nil
}

// Get returns the newest value of key and its version (ErrNotFound if it
// is absent or deleted).
func (c *Client) Get(ctx context.Context, key []byte, opts ...CallOption) ([]byte, uint64, error) {
	ctx, cancel, cl := c.prepare(ctx, opts)
	defer cancel()
	req := &kvv1.GetRequest{Key: key, Consistency: cl.consistency}
	var resp *kvv1.GetResponse
	r, ok, err := c.onSession(ctx, &kvv1.SessionCall{Call: &kvv1.SessionCall_Get{Get: req}})
	if ok && err == nil {
		if resp = r.GetGet(); resp == nil {
			err = errNoAnswer
		}
	} else if !ok {
		resp, err = c.kv.Get(ctx, req)
	}
	if err != nil {
		return nil, 0, convert(err)
	}
	c.observe(resp.Version)
	return resp.Value, resp.Version, nil
}

// Delete writes a tombstone for key and returns its version.
func (c *Client) Delete(ctx context.Context, key []byte, opts ...CallOption) (uint64, error) {
	ctx, cancel, cl := c.prepare(ctx, opts)
	defer cancel()
	req := &kvv1.DeleteRequest{Key: key, Consistency: cl.consistency, LastVersion: c.last.Load()}
	var resp *kvv1.DeleteResponse
	r, ok, err := c.onSession(ctx, &kvv1.SessionCall{Call: &kvv1.SessionCall_Delete{Delete: req}})
	if ok && err == nil {
		if resp = r.GetDelete(); resp == nil {
			err = errNoAnswer
		}
	} else if !ok {
		resp, err = c.kv.Delete(ctx, req)
	}
	if err != nil {
		return 0, convert(err)
	}
	c.observe(resp.Version)
	return resp.Version, nil
}

// Topology returns the ring as the answering node sees it.
func (c *Client) Topology(ctx context.Context) (*kvv1.TopologyResponse, error) {
	ctx, cancel, _ := c.prepare(ctx, nil)
	defer cancel()
	resp, err := c.kv.Topology(ctx, &kvv1.TopologyRequest{})
	return resp, convert(err)
}

// convert maps a gRPC status to the package's errors.
func convert(err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	var kind error
	switch s.Code() {
	case codes.NotFound:
		kind = ErrNotFound
	case codes.InvalidArgument:
		kind = ErrInvalidArgument
	case codes.ResourceExhausted:
		kind = ErrResourceExhausted
	case codes.Unavailable:
		kind = ErrUnavailable
	case codes.DeadlineExceeded:
		kind = ErrTimeout
	default:
		return err
	}
	return &Error{kind: kind, Code: s.Code(), Message: s.Message()}
}

// Error is an error answered by a node.
type Error struct {
	kind error
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the node's explanation.
	Message string
}

// Error implements error.
func (e *Error) Error() string { return e.kind.Error() + ": " + e.Message }

// Unwrap makes errors.Is match the package's sentinels.
func (e *Error) Unwrap() error { return e.kind }
