package node

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestReplicaReadsCoalesce: reads that queue up on a slow replica's read
// stream travel in shared messages, each read still gets its own answer,
// and a slow request does not hold up the others of its stream.
func TestReplicaReadsCoalesce(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) { cfg.SpeculativeRetry = -1 })
	n1 := c.nodes[0]
	ctx := ctxT(t)
	const readers, perReader = 16, 8
	for r := range readers {
		for k := range perReader {
			key := fmt.Sprintf("r%02d-%d", r, k)
			if _, err := n1.Put(ctx, []byte(key), []byte("v-"+key), All, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	slow := func(context.Context) { time.Sleep(20 * time.Millisecond) }
	for _, i := range []int{1, 2} {
		c.nodes[i].readHookForTesting.Store(&slow)
	}
	msgs, digests := counterValue(t, n1.m.readMessages), counterValue(t, n1.m.digestReads)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, readers*perReader)
	for r := range readers {
		wg.Go(func() {
			for k := range perReader {
				key := fmt.Sprintf("r%02d-%d", r, k)
				// ALL: every get sends one digest read to each of n2, n3.
				if v, _, err := n1.Get(ctx, []byte(key), All); err != nil || string(v) != "v-"+key {
					errs <- fmt.Errorf("%s = %q, %v", key, v, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	sentMsgs := counterValue(t, n1.m.readMessages) - msgs
	remote := counterValue(t, n1.m.digestReads) - digests
	if remote != 2*readers*perReader {
		t.Fatalf("%v remote digest reads, want %d", remote, 2*readers*perReader)
	}
	if sentMsgs == 0 || remote < 2*sentMsgs {
		t.Fatalf("%v remote reads in %v messages: the reads did not coalesce", remote, sentMsgs)
	}
	// Served one request at a time, the messages would take 20 ms each.
	if serial := time.Duration(sentMsgs/2) * 20 * time.Millisecond; elapsed >= serial {
		t.Fatalf("%v messages per replica took %v: the replica serves a stream's requests one at a time (%v)", sentMsgs/2, elapsed, serial)
	}
	t.Logf("%v remote reads in %v messages (%.1f per message), %v", remote, sentMsgs, remote/sentMsgs, elapsed)
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
	hang := func(ctx context.Context) { // until the stream breaks, or the end of the hang
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
