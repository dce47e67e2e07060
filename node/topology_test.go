package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tierkv/tierkv/ring"
)

// add starts one more node (joining the running cluster).
func (c *testCluster) add() int {
	c.t.Helper()
	i := len(c.nodes)
	c.dirs = append(c.dirs, filepath.Join(filepath.Dir(c.dirs[0]), fmt.Sprintf("n%d", i+1)))
	c.nodes = append(c.nodes, nil)
	c.addrs = append(c.addrs, [3]string{})
	c.start(i)
	return i
}

// writer writes keys prefix0, prefix1, ... at QUORUM through the running
// nodes until stop is closed, and returns the keys acknowledged.
func writer(t *testing.T, c *testCluster, prefix string, stop <-chan struct{}, idx []int) (done func() []string) {
	nodes := make([]*Node, len(idx))
	for i, j := range idx {
		nodes[i] = c.nodes[j]
	}
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("%s%05d", prefix, k)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := nodes[k%len(nodes)].Put(ctx, []byte(key), []byte("v-"+key), Quorum, 0)
			cancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, key)
				mu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() []string {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return acked
	}
}

// putAll writes key at ALL, retrying while a replica is briefly considered
// down (a loaded machine delays heartbeats): the tests using it are about
// placement, not availability.
func putAll(t *testing.T, n *Node, key string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		_, err := n.Put(ctxT(t), []byte(key), []byte("v-"+key), All, 0)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrUnavailable) || attempt == 50 {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkPlacement checks that every running node holds, in its own engine,
// the keys the final ring places on it (and, unless extra, no others), and
// that every key reads at QUORUM. A join leaves the displaced replicas their
// old copies (extra), as Cassandra does until a cleanup.
func checkPlacement(t *testing.T, c *testCluster, keys []string, extra bool) {
	t.Helper()
	var live *Node
	for _, n := range c.nodes {
		if n != nil {
			live = n
		}
	}
	r := live.Ring()
	ctx := ctxT(t)
	for _, key := range keys {
		owners := r.Owners([]byte(key), 3)
		for i, n := range c.nodes {
			if n == nil {
				continue
			}
			e, err := n.ReadLocalForTesting([]byte(key))
			has := err == nil && bytes.Equal(e.Value, []byte("v-"+key))
			if want := slices.Contains(owners, ring.NodeID(n.ID())); (want && !has) || (!want && !extra && err == nil) {
				t.Fatalf("n%d alone: %s held=%v (%v), owner=%v (owners %v)", i+1, key, has, err, want, owners)
			}
		}
		if v, _, err := live.Get(ctx, []byte(key), Quorum); err != nil || string(v) != "v-"+key {
			t.Fatalf("QUORUM read of %s: %q, %v", key, v, err)
		}
	}
}

// TestJoinStreamsRanges: a fourth node joins a loaded cluster under a write
// load; it streams its ranges, takes writes meanwhile, and afterwards holds
// exactly the keys the new ring gives it; every acknowledged write reads at
// QUORUM.
func TestJoinStreamsRanges(t *testing.T) {
	c := startCluster(t, 3, nil)
	var keys []string
	for k := range 600 {
		key := fmt.Sprintf("pre%04d", k)
		putAll(t, c.nodes[k%3], key)
		keys = append(keys, key)
	}
	stop := make(chan struct{})
	done := writer(t, c, "during", stop, []int{0, 1, 2})
	i := c.add()
	c.waitReady() // n4 NORMAL everywhere
	close(stop)
	acked := done()
	if len(acked) == 0 {
		t.Fatal("no write acknowledged during the join")
	}
	st := joinEnded(t, c.nodes[i])
	if st == nil || st.Op != "join" || st.Phase != "done" {
		t.Fatalf("join status %+v", st)
	}
	checkPlacement(t, c, append(keys, acked...), true)
	held := 0
	for _, key := range keys {
		if _, err := c.nodes[i].ReadLocalForTesting([]byte(key)); err == nil {
			held++
		}
	}
	share := c.nodes[i].Ring().Ownership(3)[ring.NodeID(c.nodes[i].ID())]
	t.Logf("join: %d writes acknowledged during it; n4 streamed %d keys (%d bytes) from %d sources; holds %d of %d preloaded keys (%.2f; its replica share of the ring %.2f, primary share %.2f)",
		len(acked), st.Keys, st.Bytes, st.StreamsTotal, held, len(keys), float64(held)/float64(len(keys)), share, c.nodes[i].Ring().Ownership(1)[ring.NodeID(c.nodes[i].ID())])
}

// TestDecommission: a node of four leaves under a write load; afterwards the
// three others hold every key (replication factor 3) and every acknowledged
// write reads at QUORUM.
func TestDecommission(t *testing.T) {
	c := startCluster(t, 4, nil)
	var keys []string
	for k := range 600 {
		key := fmt.Sprintf("pre%04d", k)
		putAll(t, c.nodes[k%4], key)
		keys = append(keys, key)
	}
	stop := make(chan struct{})
	done := writer(t, c, "during", stop, []int{0, 1, 2})
	resp, err := http.Post("http://"+c.nodes[3].HTTPAddr()+"/v1/admin/decommission", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("decommission: %s", resp.Status)
	}
	select {
	case <-c.nodes[3].Decommissioned():
	default:
		t.Fatal("Decommissioned not closed after the decommission answered")
	}
	st := c.nodes[3].Status().Topology
	close(stop)
	acked := done()
	c.stop(3)
	// The decommissioned data directory cannot start again.
	if n, err := Open(c.config(3)); err == nil {
		n.Close()
		t.Fatal("a decommissioned node started again on its data directory")
	} else if !strings.Contains(err.Error(), "decommissioned") {
		t.Fatalf("restart of a decommissioned node: %v", err)
	}
	c.nodes = c.nodes[:3]
	waitFor(t, 20*time.Second, "n4 gone from every ring", func() bool {
		for _, n := range c.nodes {
			if _, ok := n.Ring().Member("n4"); ok {
				return false
			}
		}
		return true
	})
	t.Logf("decommission: %+v; %d writes acknowledged during it", *st, len(acked))
	checkPlacement(t, c, append(keys, acked...), false)
}

// joinEnded waits for n's join to end and returns its status. A joined node
// is NORMAL in the ring (what waitReady waits for) a moment before its join
// reports done.
func joinEnded(t *testing.T, n *Node) *TopologyStatus {
	t.Helper()
	var st *TopologyStatus
	waitFor(t, 10*time.Second, "join to end", func() bool {
		st = n.Status().Topology
		return st != nil && (st.Phase == "done" || st.Phase == "failed")
	})
	return st
}

// TestJoinStreamResumes: every stream of a join breaks after its first batch;
// each resumes after the last key applied, so no key travels twice and the
// join completes with exact placement.
func TestJoinStreamResumes(t *testing.T) {
	c := startCluster(t, 3, nil)
	ctx := ctxT(t)
	var keys []string
	big := bytes.Repeat([]byte("v"), 4000) // batches of about 1 MiB: several per stream
	for k := range 1200 {
		key := fmt.Sprintf("r%04d", k)
		if _, err := c.nodes[k%3].Put(ctx, []byte(key), append([]byte("v-"+key), big...), All, 0); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	// The hook must be set before the node joins: through its config.
	var mu sync.Mutex
	broken := map[ring.NodeID]bool{}
	hook := func(peer ring.NodeID) error {
		mu.Lock()
		defer mu.Unlock()
		if !broken[peer] {
			broken[peer] = true
			return fmt.Errorf("test: stream from %s broken", peer)
		}
		return nil
	}
	c.mod = func(cfg *Config) {
		if cfg.ID == "n4" {
			cfg.streamHookForTesting = hook
		}
	}
	i := c.add()
	c.waitReady()
	st := joinEnded(t, c.nodes[i])
	held := 0
	for _, key := range keys {
		if _, err := c.nodes[i].ReadLocalForTesting([]byte(key)); err == nil {
			held++
		}
	}
	mu.Lock()
	nBroken := len(broken)
	mu.Unlock()
	if nBroken == 0 || st.Phase != "done" {
		t.Fatalf("%d streams broken, join %+v", nBroken, st)
	}
	if int(st.Keys) != held {
		t.Fatalf("streamed %d keys for %d held: a resumed stream sent keys again", st.Keys, held)
	}
	r := c.nodes[i].Ring()
	for _, key := range keys {
		e, err := c.nodes[i].ReadLocalForTesting([]byte(key))
		owner := slices.Contains(r.Owners([]byte(key), 3), ring.NodeID(c.nodes[i].ID()))
		if owner && (err != nil || !bytes.HasPrefix(e.Value, []byte("v-"+key))) {
			t.Fatalf("n4 lacks %s after resumed streams: %v", key, err)
		}
	}
	t.Logf("%d streams broken and resumed; %d keys streamed, each once", nBroken, st.Keys)
}
