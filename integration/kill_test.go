package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierkv/tierkv/client"
)

// TestKillLoop: QUORUM writers run while, cycle after cycle, one process is
// killed with SIGKILL and restarted; afterwards every acknowledged write is
// read back at QUORUM. Invariant 1: no acknowledged write is lost.
func TestKillLoop(t *testing.T) {
	const cycles = 4
	c := startCluster(t, 3)
	cl := c.client(0, 1, 2)
	q := client.WithConsistency(client.Quorum)

	var (
		mu    sync.Mutex
		acked = map[string]string{}
		kinds = map[string]int{}
		seq   atomic.Int64
		fails atomic.Int64
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := seq.Add(1)
				key, val := fmt.Sprintf("w%d-%06d", w, k), fmt.Sprintf("value-%d", k)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, err := cl.Put(ctx, []byte(key), []byte(val), q)
				cancel()
				if err != nil {
					fails.Add(1)
					mu.Lock()
					kinds[errKind(err)]++
					mu.Unlock()
					continue
				}
				mu.Lock()
				acked[key] = val
				mu.Unlock()
			}
		})
	}
	ackedN := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitAcks := func(more int) {
		target := ackedN() + more
		waitFor(t, 30*time.Second, fmt.Sprintf("%d acknowledged writes", target), func() bool { return ackedN() >= target })
	}
	for cycle := range cycles {
		victim := cycle % len(c.procs)
		waitAcks(50)
		c.kill(victim)
		waitAcks(50) // writes go on with two of three replicas
		c.start(victim)
		c.waitReady(3)
		t.Logf("cycle %d: killed and restarted %s; %d writes acknowledged so far", cycle+1, c.procs[victim].id, ackedN())
	}
	waitAcks(20)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	check := c.client(0, 1, 2)
	for key, want := range acked {
		// A loaded machine may make a QUORUM read time out or find too few
		// replicas answering; that is not a lost write, so retry those
		// within a deadline. Not found or a wrong value fails at once.
		var v []byte
		var err error
		waitFor(t, 30*time.Second, "a QUORUM read of "+key, func() bool {
			v, _, err = check.Get(context.Background(), []byte(key), q)
			return !errors.Is(err, client.ErrUnavailable) && !errors.Is(err, client.ErrTimeout)
		})
		if err != nil || string(v) != want {
			t.Fatalf("acknowledged write %s lost: got %q, %v; want %q", key, v, err, want)
		}
	}
	t.Logf("%d SIGKILL cycles, %d acknowledged writes checked at QUORUM (%d writes failed, unacknowledged: %v)", cycles, len(acked), fails.Load(), kinds)
}

func errKind(err error) string {
	var e *client.Error
	if errors.As(err, &e) {
		m := e.Message
		if len(m) > 80 {
			m = m[:80]
		}
		return e.Code.String() + ": " + m
	}
	return err.Error()
}
