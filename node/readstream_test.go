package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/ring"
)

// TestReplicaReadsCoalesce: reads that queue while a read pipe's sender is
// busy travel in one message, and each still gets its own answer. (Digest
// reads: a data read counts as a largest value against a message's bytes,
// so only two go in one message.)
func TestReplicaReadsCoalesce(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) { cfg.SpeculativeRetry = -1 })
	n1, n2 := c.nodes[0], c.nodes[1]
	ctx := ctxT(t)
	const readers = 16
	versions := make([]uint64, readers)
	for r := range readers {
		v, err := n1.Put(ctx, []byte(fmt.Sprintf("r%02d", r)), []byte("v"), All, 0)
		if err != nil {
			t.Fatal(err)
		}
		versions[r] = v
	}
	// The first read's message holds the sender until the other reads
	// have queued behind it.
	p := n1.reads(n2.id)
	queued := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue)
	}
	var once sync.Once
	var first atomic.Int64 // requests in the first message
	hold := func(kind string, id ring.NodeID, reqs int) {
		if kind != "read" || id != n2.id {
			return
		}
		once.Do(func() {
			first.Store(int64(reqs))
			for deadline := time.Now().Add(5 * time.Second); reqs+queued() < readers && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		})
	}
	n1.pipeSendHookForTesting.Store(&hold)
	defer n1.pipeSendHookForTesting.Store(nil)
	msgs := counterValue(t, n1.m.readMessages)
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for r := range readers {
		wg.Go(func() {
			key := fmt.Sprintf("r%02d", r)
			if m, err := n1.readRemote(ctx, n2.id, []byte(key), true); err != nil || m == nil || m.Version != versions[r] || string(m.Key) != key {
				errs <- fmt.Errorf("digest of %s = %v, %v; want version %d", key, m, err, versions[r])
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// NB: the first message holds what queued before the sender woke.
	want := 2.0
	if first.Load() == readers {
		want = 1
	}
	if got := counterValue(t, n1.m.readMessages) - msgs; got != want {
		t.Fatalf("%d reads went in %v messages, want %v: the first %d, the rest queued behind them", readers, got, want, first.Load())
	}
}

// TestReplicaReadStreamConcurrent: a replica serves the messages of one
// read stream at once, so a slow read holds up only its own message.
func TestReplicaReadStreamConcurrent(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) { cfg.SpeculativeRetry = -1 })
	n1, n2 := c.nodes[0], c.nodes[1]
	ctx := ctxT(t)
	const messages = 4
	if _, err := n1.Put(ctx, []byte("k"), []byte("v"), All, 0); err != nil {
		t.Fatal(err)
	}
	// Each message waits, inside the replica, until all of them are
	// inside, or for a second (well within replica_timeout): served one at
	// a time, at most one is ever inside.
	var mu sync.Mutex
	inside, most := 0, 0
	entered := make(chan struct{}, messages)
	wait := func(ctx context.Context, _ [][]byte) {
		mu.Lock()
		inside++
		most = max(most, inside)
		mu.Unlock()
		defer func() {
			mu.Lock()
			inside--
			mu.Unlock()
		}()
		entered <- struct{}{}
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(time.Millisecond) {
			mu.Lock()
			all := most == messages
			mu.Unlock()
			if all {
				break
			}
		}
	}
	n2.readHookForTesting.Store(&wait)
	defer n2.readHookForTesting.Store(nil)
	var wg sync.WaitGroup
	errs := make(chan error, messages)
	for range messages {
		wg.Go(func() {
			if m, err := n1.readRemote(ctx, n2.id, []byte("k"), true); err != nil || m == nil {
				errs <- fmt.Errorf("digest read = %v, %v", m, err)
			}
		})
		<-entered // the next read goes in a message of its own
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if most != messages {
		t.Fatalf("the replica served at most %d of a stream's %d messages at once", most, messages)
	}
}

// TestReplicaReadStreamResets: a replica that stops answering reads
// breaks the coordinator's read stream after replica_timeout; the read
// pending on it fails (or, at QUORUM, goes to the third replica), and once
// the replica answers again the next read opens a new stream.
func TestReplicaReadStreamResets(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.ReplicaTimeout = 300 * time.Millisecond
		cfg.SpeculativeRetry = -1
	})
	n1 := c.nodes[0]
	ctx := ctxT(t)
	key := []byte("k")
	if _, err := n1.Put(ctx, key, []byte("v"), All, 0); err != nil {
		t.Fatal(err)
	}
	live, _, _, err := n1.liveOwners(key, Quorum, false)
	if err != nil {
		t.Fatal(err)
	}
	// The replica a QUORUM read of n1 asks after itself.
	hung := c.byID(n1.readOrder(live)[1])
	release := make(chan struct{})
	hang := func(ctx context.Context, _ [][]byte) { // until the stream breaks, or the end of the hang
		select {
		case <-ctx.Done():
		case <-release:
		}
	}
	hung.readHookForTesting.Store(&hang)
	resets := counterValue(t, n1.m.readStreamResets)
	if _, _, err := n1.Get(ctx, key, All); err == nil {
		t.Fatalf("ALL get answered while %s does not answer reads", hung.ID())
	}
	if got := counterValue(t, n1.m.readStreamResets) - resets; got != 1 {
		t.Fatalf("%v read stream resets, want 1", got)
	}
	// The QUORUM read asks the hung replica on a new stream, which breaks
	// too; the read then goes to the third replica.
	if v, _, err := n1.Get(ctx, key, Quorum); err != nil || string(v) != "v" {
		t.Fatalf("QUORUM get while %s does not answer reads = %q, %v", hung.ID(), v, err)
	}
	if got := counterValue(t, n1.m.readStreamResets) - resets; got != 2 {
		t.Fatalf("%v read stream resets after the QUORUM get, want 2", got)
	}
	hung.readHookForTesting.Store(nil)
	close(release)
	if v, _, err := n1.Get(ctx, key, All); err != nil || string(v) != "v" {
		t.Fatalf("ALL get once %s answers again = %q, %v", hung.ID(), v, err)
	}
}

// TestReplicaReadStreamSlowRead: a read that stays unanswered for
// replica_timeout on a stream that keeps answering fails alone, with a
// timeout; the stream does not reset, and the reads sent on it meanwhile
// get their answers.
func TestReplicaReadStreamSlowRead(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.ReplicaTimeout = 300 * time.Millisecond
		cfg.SpeculativeRetry = -1
	})
	n1, n2 := c.nodes[0], c.nodes[1]
	ctx := ctxT(t)
	for _, k := range []string{"slow", "fast"} {
		if _, err := n1.Put(ctx, []byte(k), []byte("v-"+k), All, 0); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	defer close(release)
	held := make(chan struct{}, 1)
	hold := func(ctx context.Context, keys [][]byte) { // a message that reads "slow"
		for _, k := range keys {
			if string(k) == "slow" {
				held <- struct{}{}
				select {
				case <-ctx.Done():
				case <-release:
				}
				return
			}
		}
	}
	n2.readHookForTesting.Store(&hold)
	resets := counterValue(t, n1.m.readStreamResets)
	timeouts := counterValue(t, n1.m.messageTimeouts.WithLabelValues("read"))
	slowErr := make(chan error, 1)
	go func() {
		_, err := n1.readRemote(ctx, n2.id, []byte("slow"), false)
		slowErr <- err
	}()
	<-held
	fast := 0
	for done := false; !done; {
		m, err := n1.readRemote(ctx, n2.id, []byte("fast"), false)
		if err != nil || m == nil || string(m.Value) != "v-fast" {
			t.Fatalf("read of fast on %s while a read of slow is held = %v, %v", n2.ID(), m, err)
		}
		fast++
		select {
		case err := <-slowErr:
			if errorKind(err) != ErrTimeout {
				t.Fatalf("held read of slow = %v, want a timeout", err)
			}
			done = true
		default:
		}
	}
	if got := counterValue(t, n1.m.readStreamResets) - resets; got != 0 {
		t.Fatalf("%v read stream resets, want 0: one slow read broke a stream that answered %d reads meanwhile", got, fast)
	}
	if got := counterValue(t, n1.m.messageTimeouts.WithLabelValues("read")) - timeouts; got != 1 {
		t.Fatalf("%v read message timeouts, want 1", got)
	}
	// The stream goes on once the held read's late answer comes.
	n2.readHookForTesting.Store(nil)
	release <- struct{}{}
	if m, err := n1.readRemote(ctx, n2.id, []byte("slow"), false); err != nil || m == nil || string(m.Value) != "v-slow" {
		t.Fatalf("read of slow once released = %v, %v", m, err)
	}
	if got := counterValue(t, n1.m.readStreamResets) - resets; got != 0 {
		t.Fatalf("%v read stream resets after the late answer, want 0", got)
	}
	t.Logf("%d reads answered on the stream while one read was held", fast)
}

// TestReplicaReadStreamOpenTimeout: a replica whose connection never
// becomes ready (it accepts TCP and says nothing) fails a read with a
// timeout after replica_timeout, instead of holding it until the
// request's deadline.
func TestReplicaReadStreamOpenTimeout(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) { cfg.ReplicaTimeout = 300 * time.Millisecond })
	n1, n2 := c.nodes[0], c.nodes[1]
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	// n1's connection to n2 dials the silent listener instead.
	cc, err := grpc.NewClient(n2.GRPCAddr(), append(n1.clientOptions(), grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", silent.Addr().String())
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	n1.peers.Lock()
	if old, ok := n1.peers.conns[n2.id]; ok {
		old.cc.Close()
	}
	n1.peers.conns[n2.id] = &peerConn{addr: n2.GRPCAddr(), cc: cc, rc: kvv1.NewReplicaClient(cc)}
	n1.peers.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = n1.readRemote(ctx, n2.id, []byte("k"), true)
	if errorKind(err) != ErrTimeout || !strings.Contains(err.Error(), "did not open") {
		t.Fatalf("read from a replica that never answers the connection = %v after %v, want a timeout opening the stream", err, time.Since(start))
	}
	t.Logf("%v after %v", err, time.Since(start))
}

// TestReadPipeClose: reads still queued on a pipe when the node closes
// fail with ErrClosed instead of being sent.
func TestReadPipeClose(t *testing.T) {
	c := startCluster(t, 3, nil)
	n1, n2 := c.nodes[0], c.nodes[1]
	ctx := ctxT(t)
	if _, err := n1.Put(ctx, []byte("k"), []byte("v"), All, 0); err != nil {
		t.Fatal(err)
	}
	const queued = 3
	p := n1.reads(n2.id)
	queueLen := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue)
	}
	// The first message holds the sender until the node has stopped.
	held := make(chan struct{})
	var once sync.Once
	hold := func(kind string, id ring.NodeID, _ int) {
		if kind != "read" || id != n2.id {
			return
		}
		once.Do(func() {
			close(held)
			<-n1.stop
		})
	}
	n1.pipeSendHookForTesting.Store(&hold)
	msgs := counterValue(t, n1.m.readMessages)
	results := make(chan readResult, queued+1)
	n1.sendRead(ctx, n2.id, []byte("k"), true, results)
	<-held
	for range queued {
		n1.sendRead(ctx, n2.id, []byte("k"), true, results)
	}
	for queueLen() < queued {
		time.Sleep(time.Millisecond)
	}
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	closed := 0
	for range queued + 1 {
		if r := <-results; errors.Is(r.err, ErrClosed) {
			closed++
		}
	}
	if closed < queued {
		t.Fatalf("%d of the %d reads queued at Close failed with ErrClosed", closed, queued)
	}
	if got := counterValue(t, n1.m.readMessages) - msgs; got > 1 {
		t.Fatalf("%v read messages sent, want at most the one held at Close", got)
	}
}
