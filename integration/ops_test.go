package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tierkv/tierkv/client"
	"github.com/tierkv/tierkv/objectstore/miniotest"
	"github.com/tierkv/tierkv/ring"
)

// minioArgs points every process at a new bucket of s.
func minioArgs(t testing.TB, s *miniotest.Server) []string {
	return []string{
		"--object-store-type", "s3", "--object-store-endpoint", s.Endpoint,
		"--object-store-bucket", s.NewBucket(t), "--object-store-region", "us-east-1",
		"--object-store-access-key", s.AccessKey, "--object-store-secret-key", s.SecretKey,
		"--object-store-path-style",
	}
}

// post sends an admin POST and decodes the JSON answer into out (if set).
func post(t testing.TB, httpAddr, path string, out any) {
	t.Helper()
	resp, err := http.Post("http://"+httpAddr+path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s %s", path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("POST %s: %v: %s", path, err, b)
		}
	}
}

// status is the part of GET /v1/admin/status the tests read.
type status struct {
	State   string `json:"state"`
	Replace *struct {
		Phase            string  `json:"phase"`
		SecondsToServing float64 `json:"seconds_to_serving"`
		BackupFound      bool    `json:"backup_found"`
		RemoteObjects    int     `json:"remote_objects"`
		BytesFromBucket  int64   `json:"bytes_from_bucket"`
		BytesFromPeers   int64   `json:"bytes_from_peers"`
		KeysFromPeers    int64   `json:"keys_from_peers"`
		LastError        string  `json:"last_error"`
	} `json:"replace"`
	Topology *struct {
		Op    string `json:"op"`
		Phase string `json:"phase"`
		Keys  int64  `json:"keys"`
	} `json:"topology"`
}

func getStatus(httpAddr string) (*status, error) {
	resp, err := http.Get("http://" + httpAddr + "/v1/admin/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s status
	return &s, json.NewDecoder(resp.Body).Decode(&s)
}

// TestOpsAntiEntropy: a replica that missed writes and deletes past the hint
// window converges after an anti-entropy pass, and the deleted keys stay
// deleted (real processes, MinIO object store).
func TestOpsAntiEntropy(t *testing.T) {
	s := miniotest.Start(t)
	c := startClusterWith(t, 3, append(minioArgs(t, s), "--hint-window", "1ms", "--anti-entropy-interval", "-1s"))
	ctx := context.Background()
	cl := c.client(0, 1, 2)
	all, q := client.WithConsistency(client.All), client.WithConsistency(client.Quorum)
	const keys = 100
	for k := range keys {
		if _, err := cl.Put(ctx, fmt.Appendf(nil, "del%03d", k), []byte("doomed"), all); err != nil {
			t.Fatal(err)
		}
	}
	c.kill(2)
	c.waitDown(2)
	live := c.client(0, 1)
	for k := range keys {
		if _, err := live.Put(ctx, fmt.Appendf(nil, "ae%03d", k), fmt.Appendf(nil, "v%d", k), q); err != nil {
			t.Fatal(err)
		}
		if _, err := live.Delete(ctx, fmt.Appendf(nil, "del%03d", k), q); err != nil {
			t.Fatal(err)
		}
	}
	c.start(2)
	c.waitReady(3)
	time.Sleep(time.Second) // hint replays (200 ms) would have run
	if h := hintsPending(t, c.procs[0].http) + hintsPending(t, c.procs[1].http); h != 0 {
		t.Fatalf("%v hints pending: the window should have dropped them", h)
	}
	if r, err := c.readReplica(2, []byte("ae000")); err != nil || r.Found {
		t.Fatalf("n3 holds ae000 before the repair (%v, %v): nothing tests the repair", r, err)
	}
	var st struct {
		KeysFetched int `json:"keys_fetched"`
	}
	post(t, c.procs[2].http, "/v1/admin/repair", &st)
	if st.KeysFetched < 2*keys {
		t.Fatalf("repair fetched %d keys, want at least %d", st.KeysFetched, 2*keys)
	}
	for k := range keys {
		r, err := c.readReplica(2, fmt.Appendf(nil, "ae%03d", k))
		if err != nil || !r.Found || string(r.Mutation.Value) != fmt.Sprintf("v%d", k) {
			t.Fatalf("n3 alone after repair: ae%03d = %v, %v", k, r, err)
		}
		r, err = c.readReplica(2, fmt.Appendf(nil, "del%03d", k))
		if err != nil || !r.Found || !r.Mutation.Tombstone {
			t.Fatalf("n3 alone after repair: del%03d = %v, %v; want its tombstone", k, r, err)
		}
		if _, _, err := cl.Get(ctx, fmt.Appendf(nil, "del%03d", k), all); !strings.Contains(fmt.Sprint(err), "not found") {
			t.Fatalf("ALL read of deleted del%03d: %v", k, err)
		}
	}
	t.Logf("anti-entropy: n3 fetched %d keys; %d writes and %d deletes converged", st.KeysFetched, keys, keys)
}

// TestOpsReplace: n3 is killed with SIGKILL and its data directory deleted;
// a replacement started with --replace n3 restores from the manifest backup
// in MinIO, serves reads of the old keys while they are still remote, and
// once caught up every acknowledged write is on all three replicas.
func TestOpsReplace(t *testing.T) {
	s := miniotest.Start(t)
	c := startClusterWith(t, 3, minioArgs(t, s))
	ctx := context.Background()
	cl := c.client(0, 1)
	all, q := client.WithConsistency(client.All), client.WithConsistency(client.Quorum)
	const old = 300
	val := bytes.Repeat([]byte("x"), 2000) // separated values: blob files too
	for k := range old {
		if _, err := cl.Put(ctx, fmt.Appendf(nil, "old%03d", k), append(fmt.Appendf(nil, "%d:", k), val...), all); err != nil {
			t.Fatal(err)
		}
	}
	post(t, c.procs[2].http, "/v1/admin/backup", nil)
	// Writes after the backup, some while n3 is gone.
	var acked []string
	for k := range 100 {
		key := fmt.Sprintf("new%03d", k)
		if _, err := cl.Put(ctx, []byte(key), []byte("n-"+key), q); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, key)
	}
	c.kill(2)
	if err := os.RemoveAll(c.procs[2].dir); err != nil {
		t.Fatal(err)
	}
	c.waitDown(2)
	for k := range 50 {
		key := fmt.Sprintf("down%03d", k)
		if _, err := cl.Put(ctx, []byte(key), []byte("n-"+key), q); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, key)
	}
	start := time.Now()
	c.procs[2].extra = []string{"--replace", "n3", "--replace-skip-hydrate"}
	c.start(2)
	serving := time.Since(start)
	// A read of an old key from the replacement alone, served from the
	// bucket (nothing was hydrated: the tables are remote).
	r, err := c.readReplica(2, []byte("old007"))
	if err != nil || !r.Found || !bytes.HasPrefix(r.Mutation.Value, []byte("7:")) {
		t.Fatalf("first read from the replacement: %v, %v", r, err)
	}
	firstRead := time.Since(start)
	st, err := getStatus(c.procs[2].http)
	if err != nil || st.Replace == nil || !st.Replace.BackupFound || st.Replace.RemoteObjects == 0 {
		t.Fatalf("replacement status %+v, %v", st, err)
	}
	c.waitReady(3)
	waitFor(t, 60*time.Second, "replacement caught up", func() bool {
		st, err := getStatus(c.procs[2].http)
		return err == nil && st.Replace != nil && (st.Replace.Phase == "done" || st.Replace.Phase == "failed")
	})
	st, _ = getStatus(c.procs[2].http)
	if st.Replace.Phase != "done" {
		t.Fatalf("replacement ended %s: %s", st.Replace.Phase, st.Replace.LastError)
	}
	waitFor(t, 30*time.Second, "hints delivered to the replacement", func() bool {
		return hintsPending(t, c.procs[0].http) == 0 && hintsPending(t, c.procs[1].http) == 0
	})
	for k := range old {
		acked = append(acked, fmt.Sprintf("old%03d", k))
	}
	for _, key := range acked {
		for i := range 3 {
			r, err := c.readReplica(i, []byte(key))
			if err != nil || !r.Found {
				t.Fatalf("n%d alone: %s = %v, %v", i+1, key, r, err)
			}
		}
	}
	t.Logf("replace: serving %v after start, first read %v; caught up with %d keys (%d bytes) from peers, %d bytes from the bucket, %d remote objects; %d acknowledged writes on 3 replicas",
		serving.Round(time.Millisecond), firstRead.Round(time.Millisecond), st.Replace.KeysFromPeers, st.Replace.BytesFromPeers, st.Replace.BytesFromBucket, st.Replace.RemoteObjects, len(acked))
}

// TestOpsJoinDecommission: a fourth process joins under a QUORUM write load
// and then leaves again; every acknowledged write reads at QUORUM after
// each step and the decommissioned process exits by itself.
func TestOpsJoinDecommission(t *testing.T) {
	s := miniotest.Start(t)
	c := startClusterWith(t, 3, minioArgs(t, s))
	ctx := context.Background()
	cl := c.client(0, 1, 2)
	q := client.WithConsistency(client.Quorum)
	var keys []string
	for k := range 400 {
		key := fmt.Sprintf("pre%04d", k)
		if _, err := cl.Put(ctx, []byte(key), []byte("v-"+key), q); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	load := func(prefix string) (stop func() []string) {
		done := make(chan struct{})
		var mu sync.Mutex
		var acked []string
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-done:
					return
				default:
				}
				key := fmt.Sprintf("%s%05d", prefix, k)
				if _, err := cl.Put(ctx, []byte(key), []byte("v-"+key), q); err == nil {
					mu.Lock()
					acked = append(acked, key)
					mu.Unlock()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		return func() []string { close(done); wg.Wait(); return acked }
	}
	check := func(what string, keys []string) {
		t.Helper()
		for _, key := range keys {
			if v, _, err := cl.Get(ctx, []byte(key), q); err != nil || string(v) != "v-"+key {
				t.Fatalf("%s: QUORUM read of %s: %q, %v", what, key, v, err)
			}
		}
	}
	stop := load("join")
	c.newProc()
	c.start(3)
	c.waitReady(4)
	keys = append(keys, stop()...)
	st, err := getStatus(c.procs[3].http)
	if err != nil || st.Topology == nil || st.Topology.Op != "join" || st.Topology.Phase != "done" {
		t.Fatalf("n4 status %+v, %v", st, err)
	}
	moved := st.Topology.Keys
	check("after the join", keys)
	// Writes n4 missed while its peers did not see it Up yet were hinted.
	waitFor(t, 30*time.Second, "hints delivered to n4", func() bool {
		return hintsPending(t, c.procs[0].http)+hintsPending(t, c.procs[1].http)+hintsPending(t, c.procs[2].http) == 0
	})
	held, heldPre := 0, 0
	for i, key := range keys {
		if r, err := c.readReplica(3, []byte(key)); err == nil && r.Found {
			held++
			if i < 400 {
				heldPre++
			}
		}
	}
	// About its replica share (3/4 with RF 3 on 4 nodes) moved to n4.
	joinKeys := len(keys)
	if f := float64(held) / float64(len(keys)); f < 0.6 || f > 0.9 {
		t.Fatalf("n4 holds %d of %d keys (%.2f, %d of the 400 written before it joined); want about 3/4", held, len(keys), f, heldPre)
	}
	stop = load("leave")
	post(t, c.procs[3].http, "/v1/admin/decommission", nil)
	select {
	case <-c.procs[3].done:
	case <-time.After(30 * time.Second):
		t.Fatal("the decommissioned process did not exit")
	}
	if code := c.procs[3].cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("decommissioned process exited with %d: %s", code, c.procs[3].stderr.String())
	}
	c.procs[3].cmd = nil
	c.procs = c.procs[:3]
	keys = append(keys, stop()...)
	check("after the decommission", keys)
	// RF 3 on three nodes: each holds every key again.
	for _, key := range keys {
		for i := range 3 {
			if r, err := c.readReplica(i, []byte(key)); err != nil || !r.Found {
				t.Fatalf("after the decommission n%d alone: %s = %v, %v", i+1, key, r, err)
			}
		}
	}
	t.Logf("join: n4 streamed %d keys and holds %d of %d keys (%.2f; replica share 3/4); decommission: %d keys readable at QUORUM, each on all three remaining nodes",
		moved, held, joinKeys, float64(held)/float64(joinKeys), len(keys))
}

// countFiles counts the regular files under dir.
func countFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// TestOpsReplaceFromPeerShards: with MinIO stopped, a replacement restores
// n3's tables from the RS(2,1) shards its peers hold, serves them, catches
// up, and the peers rebuild the shards n3 held for them.
func TestOpsReplaceFromPeerShards(t *testing.T) {
	s := miniotest.StartOwn(t)
	args := append(minioArgs(t, s), "--object-store-peer-shards-data", "2", "--object-store-peer-shards-parity", "1",
		"--object-store-peer-shards-rebuild-delay", "500ms", "--tiering-hedge-delay", "200ms")
	c := startClusterWith(t, 4, args)
	ctx := context.Background()
	cl := c.client(0, 1, 3)
	all, q := client.WithConsistency(client.All), client.WithConsistency(client.Quorum)
	val := bytes.Repeat([]byte("y"), 1500)
	const old = 300
	for k := range old {
		if _, err := cl.Put(ctx, fmt.Appendf(nil, "old%03d", k), append(fmt.Appendf(nil, "%d:", k), val...), all); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		post(t, c.procs[i].http, "/v1/admin/backup", nil) // every node's objects on its peers
	}
	heldBefore := countFiles(filepath.Join(c.procs[2].dir, "shards"))
	if heldBefore == 0 {
		t.Fatal("n3 holds no shards of its peers' objects")
	}
	c.kill(2)
	if err := os.RemoveAll(c.procs[2].dir); err != nil {
		t.Fatal(err)
	}
	c.waitDown(2)
	s.Kill(t) // the bucket is gone too
	var acked []string
	for k := range 50 {
		key := fmt.Sprintf("down%03d", k)
		if _, err := cl.Put(ctx, []byte(key), []byte("n-"+key), q); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, key)
	}
	// The keys n3 replicates (RF 3 of 4 nodes).
	top, err := c.topology(0)
	if err != nil {
		t.Fatal(err)
	}
	var ms []ring.Member
	for _, m := range top.Members {
		var toks []ring.Token
		for _, x := range m.Tokens {
			toks = append(toks, ring.Token(x))
		}
		ms = append(ms, ring.Member{ID: ring.NodeID(m.Id), Tokens: toks})
	}
	rg, err := ring.New(&ring.Options{}, ms...)
	if err != nil {
		t.Fatal(err)
	}
	owned := func(key string) bool { return slices.Contains(rg.Owners([]byte(key), 3), "n3") }
	first := -1
	for k := range old {
		if owned(fmt.Sprintf("old%03d", k)) {
			first = k
			break
		}
	}
	start := time.Now()
	c.procs[2].extra = []string{"--replace", "n3", "--replace-skip-hydrate"}
	c.start(2)
	r, err := c.readReplica(2, fmt.Appendf(nil, "old%03d", first))
	if err != nil || !r.Found || !bytes.HasPrefix(r.Mutation.Value, fmt.Appendf(nil, "%d:", first)) {
		st, _ := getStatus(c.procs[2].http)
		t.Fatalf("first read from the replacement (bucket down): %v, %v; status %+v; log: %s", r, err, st.Replace, c.procs[2].stderr.String())
	}
	firstRead := time.Since(start)
	waitFor(t, 60*time.Second, "replacement caught up", func() bool {
		st, err := getStatus(c.procs[2].http)
		return err == nil && st.Replace != nil && (st.Replace.Phase == "done" || st.Replace.Phase == "failed")
	})
	st, _ := getStatus(c.procs[2].http)
	if st.Replace.Phase != "done" || !st.Replace.BackupFound || st.Replace.RemoteObjects == 0 {
		t.Fatalf("replacement: %+v", *st.Replace)
	}
	for k := range old {
		acked = append(acked, fmt.Sprintf("old%03d", k))
	}
	checked := 0
	for _, key := range acked {
		if !owned(key) {
			continue
		}
		checked++
		if r, err := c.readReplica(2, []byte(key)); err != nil || !r.Found {
			t.Fatalf("replacement alone: %s = %v, %v", key, r, err)
		}
	}
	// The peers rebuild, on the replacement, the shards it held for them.
	waitFor(t, 60*time.Second, "shards rebuilt on the replacement", func() bool {
		return countFiles(filepath.Join(c.procs[2].dir, "shards")) >= heldBefore
	})
	s.Restart(t) // the nodes' final backups and the bucket's removal need it
	t.Logf("replace with the bucket down: first read %v after start; %d bytes from the peers' shards (fallback), %d keys from peers; %d keys of n3 checked; %d shard files rebuilt on the replacement",
		firstRead.Round(time.Millisecond), st.Replace.BytesFromBucket, st.Replace.KeysFromPeers, checked, countFiles(filepath.Join(c.procs[2].dir, "shards")))
}
