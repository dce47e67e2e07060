package node

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// TestQuorumWriteRead: every key written at QUORUM is read back at QUORUM
// through every coordinator, with three nodes and with one of them down.
func TestQuorumWriteRead(t *testing.T) {
	c := startCluster(t, 3, nil)
	ctx := ctxT(t)
	const keys = 200
	write := func(round int) {
		for k := range keys {
			coord := c.nodes[k%3]
			if coord == nil {
				coord = c.nodes[(k+1)%3]
			}
			key := fmt.Appendf(nil, "key-%03d", k)
			if _, err := coord.Put(ctx, key, fmt.Appendf(nil, "v%d-%d", round, k), Quorum, 0); err != nil {
				t.Fatalf("round %d put %s: %v", round, key, err)
			}
		}
	}
	check := func(round int) {
		for _, coord := range c.nodes {
			if coord == nil {
				continue
			}
			for k := range keys {
				key := fmt.Appendf(nil, "key-%03d", k)
				v, _, err := coord.Get(ctx, key, Quorum)
				if want := fmt.Appendf(nil, "v%d-%d", round, k); err != nil || !bytes.Equal(v, want) {
					t.Fatalf("round %d: %s get %s = %q, %v; want %q", round, coord.ID(), key, v, err, want)
				}
			}
		}
	}
	write(1)
	check(1)
	c.stop(2)
	c.waitDown(2)
	write(2)
	check(2)
	t.Logf("%d keys written and read at QUORUM, with 3 and with 2 of 3 nodes", keys)
}

// TestAllFailsWhenNodeDown: ALL fails with the clear error while ONE
// succeeds, and the failed ALL write changed nothing.
func TestAllFailsWhenNodeDown(t *testing.T) {
	c := startCluster(t, 3, nil)
	ctx := ctxT(t)
	c.stop(1)
	c.waitDown(1)
	coord := c.nodes[0]
	_, err := coord.Put(ctx, []byte("k"), []byte("v"), All, 0)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("ALL put with a node down: %v, want ErrUnavailable", err)
	}
	if got := err.Error(); !bytes.Contains([]byte(got), []byte("needs 3 replicas, 2 of 3 are up")) {
		t.Fatalf("error %q does not say how many were needed and up", got)
	}
	if _, _, err := coord.Get(ctx, []byte("k"), One); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed ALL write is visible: %v", err)
	}
	if _, _, err := coord.Get(ctx, []byte("k"), All); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("ALL get with a node down: %v, want ErrUnavailable", err)
	}
	if _, err := coord.Put(ctx, []byte("k"), []byte("v"), One, 0); err != nil {
		t.Fatalf("ONE put with a node down: %v", err)
	}
	// With two replicas up, a QUORUM read asks both, so it sees the ONE
	// write whichever replica acknowledged it.
	if v, _, err := coord.Get(ctx, []byte("k"), Quorum); err != nil || string(v) != "v" {
		t.Fatalf("QUORUM get after ONE put: %q, %v", v, err)
	}
}

// TestCloseBoundedWhenFlushFails: a node whose memtable flush keeps failing
// (as on a full disk; the engine retries it) still stops within about its
// shutdown_timeout, and its acknowledged writes come back at the next start
// (from the WAL).
func TestCloseBoundedWhenFlushFails(t *testing.T) {
	var failing atomic.Bool
	efs := &vfs.ErrorFS{FS: vfs.Default, Inject: func(op vfs.Op, name string) bool {
		return failing.Load() && op == vfs.OpCreate && strings.HasSuffix(name, ".sst.tmp")
	}}
	c := startCluster(t, 1, func(cfg *Config) {
		cfg.ReplicationFactor = 1
		cfg.ShutdownTimeout = 500 * time.Millisecond
		cfg.EngineOptions = &lsm.Options{FS: efs}
	})
	n := c.nodes[0]
	if _, err := n.Put(ctxT(t), []byte("k"), []byte("v"), One, 0); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	closed := make(chan error, 1)
	start := time.Now()
	go func() { closed <- n.Close() }()
	select {
	case err := <-closed:
		t.Logf("Close returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs while the flush keeps failing")
	}
	if efs.Injected.Load() == 0 {
		t.Fatal("no failed flush: the test did not exercise a failing flush")
	}
	c.nodes[0] = nil
	failing.Store(false)
	c.start(0)
	v, _, err := c.nodes[0].Get(ctxT(t), []byte("k"), One)
	if err != nil || string(v) != "v" {
		t.Fatalf("after restart: %q, %v; want the acknowledged write", v, err)
	}
}
