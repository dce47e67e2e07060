package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestReplicaWritesCoalesce: writes that queue up on a slow replica's
// write stream are applied in engine batches; every write lands on every
// replica; and a mutation the replica refuses fails alone, not the others
// of its batch.
func TestReplicaWritesCoalesce(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		if cfg.ID == "n3" {
			cfg.MaxValueSize = 1000 // n3's engine refuses larger values
		}
	})
	slow := func(context.Context) { time.Sleep(20 * time.Millisecond) }
	for _, i := range []int{1, 2} {
		c.nodes[i].applyHookForTesting.Store(&slow)
	}
	n1 := c.nodes[0]
	const writers, perWriter = 16, 8
	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter)
	var bigErr error
	var bigOnce sync.Once
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range perWriter {
				key := fmt.Sprintf("w%02d-%d", w, k)
				if w == 3 && k == 4 {
					_, err := n1.Put(ctxT(t), []byte(key), bytes.Repeat([]byte("x"), 2000), All, 0)
					bigOnce.Do(func() { bigErr = err })
					continue
				}
				if _, err := n1.Put(ctxT(t), []byte(key), []byte("v-"+key), All, 0); err != nil {
					errs <- fmt.Errorf("%s: %w", key, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a valid write failed (with a refused one in its batch?): %v", err)
	}
	if !errors.Is(bigErr, ErrInvalidArgument) && !errors.Is(bigErr, ErrTooLarge) {
		t.Fatalf("the value n3 refuses: %v", bigErr)
	}
	n3 := c.nodes[2]
	batches := counterValue(t, n3.m.streamApplies)
	batched := counterValue(t, n3.m.streamApplied)
	if batches == 0 || batched < 2*batches {
		t.Fatalf("n3 applied %v writes in %v engine batches: the writes did not coalesce", batched, batches)
	}
	for w := range writers {
		for k := range perWriter {
			if w == 3 && k == 4 {
				continue
			}
			key := fmt.Sprintf("w%02d-%d", w, k)
			for i, n := range c.nodes {
				if e, err := n.ReadLocalForTesting([]byte(key)); err != nil || string(e.Value) != "v-"+key {
					t.Fatalf("n%d alone: %s = %q, %v", i+1, key, e.Value, err)
				}
			}
		}
	}
	t.Logf("n3 applied %v writes in %v engine batches (%.1f per batch)", batched, batches, batched/batches)
}

// TestReplicaWriteStreamResets: a replica that stops answering breaks the
// coordinator's write stream after replica_timeout; the writes pending on
// it fail (and are hinted), and once the replica answers again the next
// write opens a new stream and lands.
func TestReplicaWriteStreamResets(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) { cfg.ReplicaTimeout = 300 * time.Millisecond })
	n1, n3 := c.nodes[0], c.nodes[2]
	ctx := ctxT(t)
	if _, err := n1.Put(ctx, []byte("before"), []byte("v"), All, 0); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	hang := func(ctx context.Context) { // until the stream breaks, or the end of the hang
		select {
		case <-ctx.Done():
		case <-release:
		}
	}
	n3.applyHookForTesting.Store(&hang)
	resets := counterValue(t, n1.m.streamResets)
	if _, err := n1.Put(ctx, []byte("during"), []byte("v"), All, 0); err == nil {
		t.Fatal("ALL put acknowledged while n3 does not answer")
	}
	if _, err := n1.Put(ctx, []byte("during2"), []byte("v"), Quorum, 0); err != nil {
		t.Fatalf("QUORUM put while n3 does not answer: %v", err)
	}
	waitFor(t, 10*time.Second, "n1's stream to n3 reset", func() bool { return counterValue(t, n1.m.streamResets) > resets })
	n3.applyHookForTesting.Store(nil)
	close(release) // hint replays may have opened another stream meanwhile
	if _, err := n1.Put(ctx, []byte("after"), []byte("v"), All, 0); err != nil {
		t.Fatalf("ALL put once n3 answers again: %v", err)
	}
	waitFor(t, 20*time.Second, "hints delivered to n3", func() bool { return n1.HintsPending() == 0 })
	for _, key := range []string{"before", "during", "during2", "after"} {
		if e, err := n3.ReadLocalForTesting([]byte(key)); err != nil || string(e.Value) != "v" {
			t.Fatalf("n3 alone: %s = %q, %v", key, e.Value, err)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
