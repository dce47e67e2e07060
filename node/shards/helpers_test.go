package shards

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/erasure"
	"github.com/tierkv/tierkv/objectstore/localfs"
	"github.com/tierkv/tierkv/ring"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// grpc's resolver/balancer callback goroutine ends shortly after
		// ClientConn.Close.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

// tnode is a fake node: a gRPC server with the Shards service over its
// own bucket.
type tnode struct {
	id     ring.NodeID
	zone   string
	bucket objectstore.Bucket
	srv    *Server
	gs     *grpc.Server
	addr   string
	up     bool
}

// tcluster runs fake nodes on 127.0.0.1 and a ring of them.
type tcluster struct {
	t         testing.TB
	newBucket func(t testing.TB) objectstore.Bucket
	srvOpts   ServerOptions

	mu    sync.Mutex
	nodes map[ring.NodeID]*tnode
	conns map[ring.NodeID]*grpc.ClientConn
	ring  atomic.Pointer[ring.Ring]
}

func memBucket(testing.TB) objectstore.Bucket { return objectstore.NewMemBucket() }

func localfsBucket(t testing.TB) objectstore.Bucket {
	b, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newCluster starts nodes n01..nNN (zones[i%len(zones)] if zones is not
// empty) and builds their ring.
func newCluster(t testing.TB, n int, zones []string, newBucket func(testing.TB) objectstore.Bucket, so ServerOptions) *tcluster {
	t.Helper()
	c := &tcluster{t: t, newBucket: newBucket, srvOpts: so, nodes: map[ring.NodeID]*tnode{}, conns: map[ring.NodeID]*grpc.ClientConn{}}
	r, err := ring.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c.ring.Store(r)
	t.Cleanup(c.close)
	for i := 1; i <= n; i++ {
		zone := ""
		if len(zones) > 0 {
			zone = zones[(i-1)%len(zones)]
		}
		c.join(ring.NodeID(fmt.Sprintf("n%02d", i)), zone)
	}
	return c
}

func (c *tcluster) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.conns {
		cc.Close()
	}
	for _, n := range c.nodes {
		if n.up {
			n.gs.Stop()
			n.up = false
		}
		n.bucket.Close()
	}
}

// join starts a node and adds it to the ring.
func (c *tcluster) join(id ring.NodeID, zone string) *tnode {
	c.t.Helper()
	n := &tnode{id: id, zone: zone, bucket: c.newBucket(c.t), addr: "127.0.0.1:0"}
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	c.start(id)
	r := c.ring.Load()
	toks, err := r.AllocateTokens(id)
	if err != nil {
		c.t.Fatal(err)
	}
	r, err = r.Add(ring.Member{ID: id, Zone: zone, State: ring.StateNormal, Tokens: toks})
	if err != nil {
		c.t.Fatal(err)
	}
	c.ring.Store(r)
	return n
}

// leave removes a node from the ring (its server keeps running).
func (c *tcluster) leave(id ring.NodeID) { c.ring.Store(c.ring.Load().Remove(id)) }

// setState changes a member's state on the ring.
func (c *tcluster) setState(id ring.NodeID, s ring.State) {
	c.t.Helper()
	r := c.ring.Load()
	m, ok := r.Member(id)
	if !ok {
		c.t.Fatalf("no member %s", id)
	}
	m.State = s
	r2, err := r.Remove(id).Add(m)
	if err != nil {
		c.t.Fatal(err)
	}
	c.ring.Store(r2)
}

// start (re)starts a node's server, on the same address after a stop.
func (c *tcluster) start(id ring.NodeID) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	var lis net.Listener
	var err error
	for attempt := 0; ; attempt++ {
		lis, err = net.Listen("tcp", n.addr)
		if err == nil || attempt == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	n.addr = lis.Addr().String()
	n.srv = NewServer(n.bucket, c.srvOpts)
	n.gs = grpc.NewServer()
	n.srv.Register(n.gs)
	n.up = true
	gs := n.gs
	go gs.Serve(lis)
	if cc, ok := c.conns[id]; ok {
		// Like the node when gossip reports a peer up: reconnect now, and
		// (for the tests' determinism) wait until connected.
		cc.ResetConnectBackoff()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for st := cc.GetState(); st != connectivity.Ready; st = cc.GetState() {
			cc.Connect()
			if !cc.WaitForStateChange(ctx, st) {
				c.t.Fatalf("no connection to %s after its restart", id)
			}
		}
	}
}

// stop stops a node's server: calls to it fail as unreachable.
func (c *tcluster) stop(id ring.NodeID) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	if !n.up {
		return
	}
	n.gs.Stop()
	n.up = false
	if cc, ok := c.conns[id]; ok {
		// Wait until the client noticed, so that a restart is not masked
		// by the old, dead connection.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for st := cc.GetState(); st == connectivity.Ready; st = cc.GetState() {
			if !cc.WaitForStateChange(ctx, st) {
				c.t.Fatalf("the connection to %s stays ready after its stop", id)
			}
		}
	}
}

// wipe replaces a node's shard store with an empty one: the node lost
// every shard it held.
func (c *tcluster) wipe(id ring.NodeID) {
	c.t.Helper()
	c.stop(id)
	c.mu.Lock()
	n := c.nodes[id]
	n.bucket.Close()
	n.bucket = c.newBucket(c.t)
	c.mu.Unlock()
	c.start(id)
}

func (c *tcluster) node(id ring.NodeID) *tnode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

func (c *tcluster) conn(id ring.NodeID) (grpc.ClientConnInterface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[id]; ok {
		return cc, nil
	}
	n, ok := c.nodes[id]
	if !ok {
		return nil, fmt.Errorf("no address for %s", id)
	}
	cc, err := grpc.NewClient(n.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond,
		}, MinConnectTimeout: time.Second}))
	if err != nil {
		return nil, err
	}
	c.conns[id] = cc
	return cc, nil
}

func (c *tcluster) options(self ring.NodeID, k, m int) Options {
	return Options{Self: self, Ring: c.ring.Load, Conn: c.conn, K: k, M: m}
}

// ids returns the ring's member ids.
func (c *tcluster) ids() []ring.NodeID {
	var out []ring.NodeID
	for _, m := range c.ring.Load().Members() {
		out = append(out, m.ID)
	}
	return out
}

// storedOn returns the names in a node's shard store (bypassing gRPC).
func (c *tcluster) storedOn(id ring.NodeID) []string {
	c.t.Helper()
	var names []string
	if err := objectstore.Iter(context.Background(), c.node(id).bucket, "", func(n string) error {
		names = append(names, n)
		return nil
	}); err != nil {
		c.t.Fatal(err)
	}
	return names
}

// badRecorder collects what erasure's OnReconstruct reports.
type badRecorder struct {
	mu  sync.Mutex
	bad map[string][]int
}

func newBadRecorder() *badRecorder { return &badRecorder{bad: map[string][]int{}} }

func (b *badRecorder) record(name string, bad []erasure.ShardError) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range bad {
		b.bad[name] = append(b.bad[name], s.Index)
	}
	slices.Sort(b.bad[name])
}

func (b *badRecorder) take(name string) []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := b.bad[name]
	delete(b.bad, name)
	return v
}

func mustErasure(t testing.TB, o Options) *erasure.Bucket {
	t.Helper()
	b, err := NewErasure(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func put(t testing.TB, b objectstore.Bucket, name string, data []byte) {
	t.Helper()
	if err := b.Put(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%q): %v", name, err)
	}
}
