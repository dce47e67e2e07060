package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/ring"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// grpc's and memberlist's package-level workers.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/go-metrics.(*InmemSink).Stop"),
		// memberlist's Shutdown does not wait for an in-flight probe,
		// which ends at its probe timeout.
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
	)
}

// testCluster is an in-process cluster: real engines, gRPC and HTTP on
// loopback, gossip over memberlist's UDP/TCP transport on loopback. A
// restarted node keeps its addresses, as a restarted process would.
// (gossip.MemNetwork gives a restarted member a new address, which
// memberlist refuses until the old one is reclaimed.)
type testCluster struct {
	t     testing.TB
	dirs  []string
	addrs [][3]string // gossip, grpc, http of each node once started
	nodes []*Node     // nil while stopped
	mod   func(*Config)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startCluster starts n nodes one after the other (joins are serialised)
// and waits until every node sees every other Up.
func startCluster(t testing.TB, n int, mod func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, mod: mod}
	base := t.TempDir()
	for i := range n {
		c.dirs = append(c.dirs, filepath.Join(base, fmt.Sprintf("n%d", i+1)))
		c.nodes = append(c.nodes, nil)
		c.addrs = append(c.addrs, [3]string{})
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	c.waitReady()
	return c
}

func (c *testCluster) config(i int) *Config {
	cfg := LocalConfig()
	cfg.ID = fmt.Sprintf("n%d", i+1)
	cfg.DataDir = c.dirs[i]
	cfg.Logger = quietLogger()
	if a := c.addrs[i]; a[0] != "" {
		cfg.GossipAddr, cfg.GRPCAddr, cfg.HTTPAddr = a[0], a[1], a[2]
	}
	// Generous for a loaded 2-core CI machine running other packages'
	// tests under the race detector; the tests never wait them out (a
	// down replica is detected by phi, not by timeouts).
	cfg.RequestTimeout = 5 * time.Second
	cfg.ReplicaTimeout = 3 * time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.RingDelay = 5 * time.Second
	for j, a := range c.addrs {
		if a[0] != "" && j != i {
			cfg.Seeds = append(cfg.Seeds, a[0])
		}
	}
	if c.mod != nil {
		c.mod(cfg)
	}
	return cfg
}

func (c *testCluster) start(i int) {
	c.t.Helper()
	n, err := Open(c.config(i))
	if err != nil {
		c.t.Fatalf("start n%d: %v", i+1, err)
	}
	c.nodes[i] = n
	c.addrs[i] = [3]string{n.GossipAddr(), n.GRPCAddr(), n.HTTPAddr()}
}

func (c *testCluster) stop(i int) {
	c.t.Helper()
	if c.nodes[i] == nil {
		return
	}
	if err := c.nodes[i].Close(); err != nil {
		c.t.Errorf("stop n%d: %v", i+1, err)
	}
	c.nodes[i] = nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for an event
	}
}

// waitReady waits until every running node sees every node with tokens and
// every running node Up.
func (c *testCluster) waitReady() {
	c.t.Helper()
	defer func() {
		if c.t.Failed() {
			for _, a := range c.nodes {
				if a == nil {
					continue
				}
				for _, m := range a.g.Members() {
					c.t.Logf("%s sees %s: addr %s reachable %v up %v gen %d tokens %d state %v", a.ID(), m.ID, m.Addr, m.Reachable, m.Up, m.Generation, len(m.Tokens), m.State)
				}
			}
		}
	}()
	waitFor(c.t, 20*time.Second, "cluster ready", func() bool {
		for _, a := range c.nodes {
			if a == nil {
				continue
			}
			if a.Ring().Len() < len(c.nodes) {
				return false
			}
			for _, m := range a.Ring().Members() {
				if m.State != ring.StateNormal {
					return false // a join still streaming
				}
			}
			for _, b := range c.nodes {
				if b != nil && !a.Up(b.ID()) {
					return false
				}
			}
		}
		return true
	})
}

// waitDown waits until every running node considers node i down.
func (c *testCluster) waitDown(i int) {
	c.t.Helper()
	id := fmt.Sprintf("n%d", i+1)
	waitFor(c.t, 20*time.Second, id+" down", func() bool {
		for _, a := range c.nodes {
			if a != nil && a.Up(id) {
				return false
			}
		}
		return true
	})
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// byID returns the running node with the given id.
func (c *testCluster) byID(id ring.NodeID) *Node {
	c.t.Helper()
	for _, n := range c.nodes {
		if n != nil && n.id == id {
			return n
		}
	}
	c.t.Fatalf("no running node %s", id)
	return nil
}
