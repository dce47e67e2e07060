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

// TestReplicaWritesCoalesce: writes that queue for a slow replica go out in
// batches; every write lands on every replica; and a mutation the replica
// refuses fails alone, not the others of its batch.
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
	batches := counterValue(t, n1.m.batchCalls)
	batched := counterValue(t, n1.m.batched)
	if batches == 0 || batched < 2*batches {
		t.Fatalf("%v batch calls carrying %v writes: the writes did not coalesce", batches, batched)
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
	t.Logf("%v batch calls carried %v writes (%.1f per call)", batches, batched, batched/batches)
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
