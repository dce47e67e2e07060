package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/prometheus/client_golang/prometheus/testutil"
	kvv1 "github.com/tierkv/tierkv/api/kv/v1"

	"github.com/tierkv/tierkv/client"
)

// TestSessionConcurrentCalls: many calls in flight on the sessions at once
// each get their own answer (answers are matched by id, not by order).
func TestSessionConcurrentCalls(t *testing.T) {
	c := startCluster(t, 3, nil)
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.GRPCAddr())
	}
	cl, err := client.New(addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := ctxT(t)
	const workers, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				k := []byte(fmt.Sprintf("w%d-k%d", w, i))
				v := []byte(fmt.Sprintf("value of %s", k))
				ver, err := cl.Put(ctx, k, v, client.WithConsistency(client.All))
				if err != nil {
					errs <- fmt.Errorf("put %s: %w", k, err)
					return
				}
				got, gotVer, err := cl.Get(ctx, k, client.WithConsistency(client.Quorum))
				if err != nil || string(got) != string(v) || gotVer != ver {
					errs <- fmt.Errorf("get %s: %q@%d %v; want %q@%d", k, got, gotVer, err, v, ver)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	// The client's default carried every call on the sessions.
	calls := 0.0
	for _, n := range c.nodes {
		calls += testutil.ToFloat64(n.m.sessionCalls)
	}
	if calls != 2*workers*each {
		t.Fatalf("%v calls arrived on sessions, want %d", calls, 2*workers*each)
	}
	// Every key is on every node (ALL: three replicas of three nodes).
	if k := countEntries(t, c.nodes[0]); k != workers*each {
		t.Fatalf("node 0 holds %d versions, want %d", k, workers*each)
	}
}

// TestSessionNodeDown: a client with sessions goes on through the other
// nodes when one is closed; the calls pending on its session fail with
// UNAVAILABLE, and none hangs.
func TestSessionNodeDown(t *testing.T) {
	c := startCluster(t, 3, nil)
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.GRPCAddr())
	}
	cl, err := client.New(addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := ctxT(t)
	for i := range 6 { // opens a session with every node
		if _, err := cl.Put(ctx, []byte(fmt.Sprint("before", i)), []byte("v"), client.WithConsistency(client.Quorum)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i := range 30 {
		k := []byte(fmt.Sprint("after", i))
		ver, err := cl.Put(ctx, k, []byte("v"), client.WithConsistency(client.Quorum))
		if err != nil {
			if !errors.Is(err, client.ErrUnavailable) {
				t.Fatalf("put %s with a node closed: %v; want success or ErrUnavailable", k, err)
			}
			failed++
			continue
		}
		if _, got, err := cl.Get(ctx, k, client.WithConsistency(client.Quorum)); err != nil || got != ver {
			t.Fatalf("get %s: @%d %v; want @%d", k, got, err, ver)
		}
	}
	if failed > 1 { // at most the first call on the closed node's session
		t.Fatalf("%d of 30 puts failed with one of three nodes closed", failed)
	}
}

// TestSessionMalformed: a malformed Session message ends the session
// with INVALID_ARGUMENT and writes nothing; a call without an operation
// gets INVALID_ARGUMENT and the session goes on.
func TestSessionMalformed(t *testing.T) {
	c := startCluster(t, 1, func(cfg *Config) { cfg.ReplicationFactor = 1 })
	cc, err := grpc.NewClient(c.nodes[0].GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, garbage := range [][]byte{{0xff, 0xff, 0xff}, {0x0a, 0x80}} {
		st, err := cc.NewStream(ctxT(t), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, kvv1.KV_Session_FullMethodName, grpc.ForceCodec(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.SendMsg(garbage); err != nil {
			t.Fatal(err)
		}
		var out []byte
		if err := st.RecvMsg(&out); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("session message %x: %v; want INVALID_ARGUMENT", garbage, err)
		}
	}
	st, err := kvv1.NewKVClient(cc).Session(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	calls := []*kvv1.SessionCall{
		{Id: 1},
		{Id: 2, Call: &kvv1.SessionCall_Put{Put: &kvv1.PutRequest{Key: nil, Value: []byte("v")}}},
		{Id: 3, Call: &kvv1.SessionCall_Get{Get: &kvv1.GetRequest{Key: []byte("absent")}}},
	}
	if err := st.Send(&kvv1.SessionRequest{Calls: calls}); err != nil {
		t.Fatal(err)
	}
	want := map[uint64]codes.Code{1: codes.InvalidArgument, 2: codes.InvalidArgument, 3: codes.NotFound}
	for len(want) > 0 {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.Results {
			if codes.Code(r.Code) != want[r.Id] {
				t.Fatalf("call %d: %v %q; want %v", r.Id, codes.Code(r.Code), r.Message, want[r.Id])
			}
			delete(want, r.Id)
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("session answered after the client ended it")
	}
	if k := countEntries(t, c.nodes[0]); k != 0 {
		t.Fatalf("%d versions after malformed session calls", k)
	}
}

// TestSessionDrainAnswersCalls: a node that closes answers the calls its
// sessions received before it drained (a QUORUM get held on a replica
// read), and the session then ends.
func TestSessionDrainAnswersCalls(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) { cfg.SpeculativeRetry = -1 })
	a := c.nodes[0]
	ctx := ctxT(t)
	ver, err := a.Put(ctx, []byte("k"), []byte("v"), All, 0)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	held := make(chan struct{}, 2)
	hold := func(ctx context.Context, _ [][]byte) {
		held <- struct{}{}
		select {
		case <-ctx.Done():
		case <-release:
		}
	}
	for _, n := range c.nodes[1:] {
		n.readHookForTesting.Store(&hold)
	}
	cc, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	st, err := kvv1.NewKVClient(cc).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	get := &kvv1.SessionCall{Id: 7, Call: &kvv1.SessionCall_Get{Get: &kvv1.GetRequest{Key: []byte("k"), Consistency: kvv1.Consistency_QUORUM}}}
	if err := st.Send(&kvv1.SessionRequest{Calls: []*kvv1.SessionCall{get}}); err != nil {
		t.Fatal(err)
	}
	<-held
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	for !a.closing.Load() {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the session sees the drain
	close(release)
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("the call received before the drain got no answer: %v", err)
	}
	if len(resp.Results) != 1 || resp.Results[0].Id != 7 || codes.Code(resp.Results[0].Code) != codes.OK {
		t.Fatalf("answer %v; want call 7 answered OK", resp.Results)
	}
	if g := resp.Results[0].GetGet(); g == nil || string(g.Value) != "v" || g.Version != ver {
		t.Fatalf("get answered %v; want v@%d", resp.Results[0], ver)
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("the session went on after its node drained")
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}
