package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/client"
	"github.com/tierkv/tierkv/lsm"
)

func httpDo(t *testing.T, method, url string, body []byte, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestHTTPAPI: put, get (ETag, X-Version), delete, consistency header and
// the last-seen-version header over HTTP.
func TestHTTPAPI(t *testing.T) {
	c := startCluster(t, 3, nil)
	base := func(i int) string { return "http://" + c.nodes[i].HTTPAddr() + "/v1/kv/" }
	resp, body := httpDo(t, "POST", base(0)+"greeting", []byte("hello"), map[string]string{"X-Consistency-Level": "QUORUM"})
	if resp.StatusCode != 200 {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	var put struct{ Version uint64 }
	if err := json.Unmarshal(body, &put); err != nil || put.Version == 0 {
		t.Fatalf("POST body %s: %v", body, err)
	}
	resp, body = httpDo(t, "GET", base(1)+"greeting", nil, map[string]string{"X-Consistency-Level": "quorum"})
	if resp.StatusCode != 200 || string(body) != "hello" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Version") != fmt.Sprint(put.Version) || resp.Header.Get("ETag") != fmt.Sprintf("%q", fmt.Sprint(put.Version)) {
		t.Fatalf("GET headers %v, want version %d", resp.Header, put.Version)
	}
	// A write through another node handing back a far-future last version
	// is stamped above it (invariant 2).
	future := put.Version + 1<<30
	resp, body = httpDo(t, "PUT", base(2)+"greeting", []byte("again"), map[string]string{"X-Last-Version": fmt.Sprint(future)})
	if err := json.Unmarshal(body, &put); resp.StatusCode != 200 || err != nil || put.Version <= future {
		t.Fatalf("PUT with X-Last-Version: %d %s (want version > %d)", resp.StatusCode, body, future)
	}
	resp, body = httpDo(t, "DELETE", base(0)+"greeting", nil, map[string]string{"X-Consistency-Level": "ALL", "X-Last-Version": fmt.Sprint(put.Version)})
	if resp.StatusCode != 200 {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	resp, body = httpDo(t, "GET", base(1)+"greeting", nil, map[string]string{"X-Consistency-Level": "ALL"})
	if resp.StatusCode != 404 || !strings.Contains(string(body), `"code":"NotFound"`) {
		t.Fatalf("GET after DELETE: %d %s", resp.StatusCode, body)
	}
	// Keys may hold slashes and any UTF-8.
	resp, _ = httpDo(t, "PUT", base(0)+"a/b/%C3%A9t%C3%A9", []byte("x"), map[string]string{"X-Consistency-Level": "QUORUM"})
	if resp.StatusCode != 200 {
		t.Fatalf("PUT a/b/été: %d", resp.StatusCode)
	}
	if v, _, err := c.nodes[1].Get(ctxT(t), []byte("a/b/été"), Quorum); err != nil || string(v) != "x" {
		t.Fatalf("get a/b/été: %q %v", v, err)
	}
}

// countEntries returns the number of versions (tombstones included) in a
// node's engine.
func countEntries(t *testing.T, n *Node) int {
	t.Helper()
	it, err := n.db.NewIter(&lsm.IterOptions{IncludeTombstones: true})
	if err != nil {
		t.Fatal(err)
	}
	k := 0
	for ok := it.First(); ok; ok = it.Next() {
		k++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBadInput: bad input on both APIs gets the right status and changes
// nothing on any replica.
func TestBadInput(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) { cfg.MaxKeySize = 16; cfg.MaxValueSize = 64 })
	base := "http://" + c.nodes[0].HTTPAddr() + "/v1/kv/"
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		hdr                map[string]string
		want               int
	}{
		{"empty key", "PUT", "", []byte("v"), nil, 400},
		{"invalid UTF-8 key", "PUT", "%FF%FE", []byte("v"), nil, 400},
		{"invalid UTF-8 key GET", "GET", "%FF", nil, nil, 400},
		{"oversized key", "PUT", strings.Repeat("k", 17), []byte("v"), nil, 413},
		{"oversized value", "PUT", "k", bytes.Repeat([]byte("v"), 65), nil, 413},
		{"unknown consistency", "PUT", "k", []byte("v"), map[string]string{"X-Consistency-Level": "MOST"}, 400},
		{"unknown consistency GET", "GET", "k", nil, map[string]string{"X-Consistency-Level": "TWO"}, 400},
		{"bad last version", "PUT", "k", []byte("v"), map[string]string{"X-Last-Version": "yesterday"}, 400},
		{"unknown consistency DELETE", "DELETE", "k", nil, map[string]string{"X-Consistency-Level": "x"}, 400},
	} {
		resp, body := httpDo(t, tc.method, base+tc.path, tc.body, tc.hdr)
		var eb errorBody
		if resp.StatusCode != tc.want || json.Unmarshal(body, &eb) != nil || eb.Error == "" {
			t.Errorf("HTTP %s: %d %s, want %d with a JSON error", tc.name, resp.StatusCode, body, tc.want)
		}
	}

	cc, err := grpc.NewClient(c.nodes[1].GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	kv := kvv1.NewKVClient(cc)
	ctx := ctxT(t)
	for _, tc := range []struct {
		name string
		req  *kvv1.PutRequest
		want codes.Code
	}{
		{"empty key", &kvv1.PutRequest{Value: []byte("v")}, codes.InvalidArgument},
		{"invalid UTF-8 key", &kvv1.PutRequest{Key: []byte{0xff}, Value: []byte("v")}, codes.InvalidArgument},
		{"oversized key", &kvv1.PutRequest{Key: bytes.Repeat([]byte("k"), 17)}, codes.ResourceExhausted},
		{"oversized value", &kvv1.PutRequest{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 65)}, codes.ResourceExhausted},
		{"unknown consistency", &kvv1.PutRequest{Key: []byte("k"), Consistency: 7}, codes.InvalidArgument},
	} {
		_, err := kv.Put(ctx, tc.req)
		if status.Code(err) != tc.want {
			t.Errorf("gRPC Put %s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := kv.Get(ctx, &kvv1.GetRequest{Key: []byte{0xc3}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("gRPC Get invalid UTF-8: %v", err)
	}
	if _, err := kv.Delete(ctx, &kvv1.DeleteRequest{Key: []byte("k"), Consistency: 9}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("gRPC Delete unknown consistency: %v", err)
	}
	for _, n := range c.nodes {
		if k := countEntries(t, n); k != 0 {
			t.Errorf("%s holds %d versions after bad input, want 0", n.ID(), k)
		}
		if p := n.HintsPending(); p != 0 {
			t.Errorf("%s holds %d hints after bad input", n.ID(), p)
		}
	}
}

// TestGRPCClient: the Go client against the cluster: put/get/delete,
// consistency, Topology, health, and its error mapping.
func TestGRPCClient(t *testing.T) {
	c := startCluster(t, 3, nil)
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.GRPCAddr())
	}
	for _, unary := range []bool{false, true} {
		t.Run(fmt.Sprintf("unary=%v", unary), func(t *testing.T) {
			cl, err := client.New(addrs, &client.Options{Unary: unary})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			testGRPCClient(t, c, cl, addrs)
		})
	}
}

func testGRPCClient(t *testing.T, c *testCluster, cl *client.Client, addrs []string) {
	ctx := ctxT(t)
	v1, err := cl.Put(ctx, []byte("k"), []byte("v1"), client.WithConsistency(client.Quorum))
	if err != nil {
		t.Fatal(err)
	}
	// Round-robin: the next write likely goes through another node in the
	// same millisecond; the client's last version keeps it ordered.
	v2, err := cl.Put(ctx, []byte("k"), []byte("v2"), client.WithConsistency(client.Quorum))
	if err != nil || v2 <= v1 {
		t.Fatalf("second put %d, %v; first %d", v2, err, v1)
	}
	val, ver, err := cl.Get(ctx, []byte("k"), client.WithConsistency(client.Quorum))
	if err != nil || string(val) != "v2" || ver != v2 {
		t.Fatalf("get: %q@%d %v", val, ver, err)
	}
	if _, err := cl.Delete(ctx, []byte("k"), client.WithConsistency(client.All)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.Get(ctx, []byte("k"), client.WithConsistency(client.All)); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := cl.Put(ctx, nil, []byte("v")); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("empty key: %v", err)
	}
	top, err := cl.Topology(ctx)
	if err != nil || len(top.Members) != 3 || top.ReplicationFactor != 3 || top.Epoch == 0 {
		t.Fatalf("topology %v, %v", top, err)
	}
	for _, m := range top.Members {
		if len(m.Tokens) != 16 || m.State != "NORMAL" || !m.Up || m.GrpcAddr == "" {
			t.Fatalf("member %v", m)
		}
	}
	if top2 := c.nodes[2].Topology(); top2.Epoch != top.Epoch {
		t.Fatalf("epochs differ between nodes with the same view: %d vs %d", top2.Epoch, top.Epoch)
	}
	cc, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}
}

// TestInFlightBound: over max_in_flight, requests get 429 /
// RESOURCE_EXHAUSTED.
func TestInFlightBound(t *testing.T) {
	c := startCluster(t, 1, func(cfg *Config) { cfg.MaxInFlight = 1; cfg.ReplicationFactor = 1 })
	n := c.nodes[0]
	release, err := n.acquire() // hold the only slot
	if err != nil {
		t.Fatal(err)
	}
	resp, body := httpDo(t, "GET", "http://"+n.HTTPAddr()+"/v1/kv/k", nil, nil)
	if resp.StatusCode != 429 {
		t.Fatalf("GET over the bound: %d %s", resp.StatusCode, body)
	}
	for _, unary := range []bool{false, true} {
		cl, _ := client.New([]string{n.GRPCAddr()}, &client.Options{Unary: unary})
		defer cl.Close()
		if _, err := cl.Put(ctxT(t), []byte("k"), nil); !errors.Is(err, client.ErrResourceExhausted) {
			t.Fatalf("Put over the bound (unary %v): %v", unary, err)
		}
	}
	release()
	cl, _ := client.New([]string{n.GRPCAddr()}, nil)
	defer cl.Close()
	if _, err := cl.Put(ctxT(t), []byte("k"), nil); err != nil {
		t.Fatalf("Put after release: %v", err)
	}
}

// TestMetrics: /metrics serves the node's metrics and they pass promlint.
func TestMetrics(t *testing.T) {
	c := startCluster(t, 3, nil)
	ctx := ctxT(t)
	if _, err := c.nodes[0].Put(ctx, []byte("m"), []byte("v"), Quorum, 0); err != nil {
		t.Fatal(err)
	}
	// At ONE the first answer may come from the replica the write has not
	// reached yet: not found is a valid answer here.
	if _, _, err := c.nodes[0].Get(ctx, []byte("m"), One); err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	resp, body := httpDo(t, "GET", "http://"+c.nodes[0].HTTPAddr()+"/metrics", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	for _, name := range []string{
		`tierkv_request_duration_seconds_bucket{consistency="QUORUM",op="write"`,
		`tierkv_request_duration_seconds_bucket{consistency="ONE",op="read"`,
		"tierkv_hints_pending ", "tierkv_hints_delivered_total", "tierkv_hints_dropped_total",
		"tierkv_compaction_backlog_bytes", `tierkv_disk_usage_bytes{tier="local"}`, `tierkv_disk_usage_bytes{tier="remote"}`,
		`tierkv_gossip_phi{peer="n2"}`, "tierkv_gossip_convergence_seconds", "tierkv_read_repairs_total",
		`tierkv_replica_reads_total{kind="digest"}`, "tierkv_read_speculative_retries_total", "tierkv_read_digest_mismatches_total",
		"tierkv_wal_syncs_total", "tierkv_wal_records_total", "tierkv_wal_bytes_total",
		"tierkv_flushes_total", "tierkv_compactions_total", "tierkv_compaction_written_bytes_total",
		"tierkv_blob_rewrite_bytes_total", "tierkv_blob_rewrite_limit_bytes_per_second",
		"tierkv_replica_read_messages_total", "tierkv_replica_read_stream_resets_total",
		`tierkv_replica_message_timeouts_total{kind="write"}`, `tierkv_replica_message_timeouts_total{kind="read"}`,
		"go_sched_latencies_seconds_bucket",
	} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	// The writes above waited for WAL syncs, each timed.
	if m := regexp.MustCompile(`(?m)^tierkv_wal_sync_duration_seconds_count (\d+)$`).FindSubmatch(body); m == nil || string(m[1]) == "0" {
		t.Errorf("/metrics: tierkv_wal_sync_duration_seconds_count = %q after acknowledged writes", m)
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "tierkv_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

// TestTimeout: replicas that do not answer before the request deadline
// give 504 / DEADLINE_EXCEEDED with the acknowledgement count.
func TestTimeout(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) { cfg.RequestTimeout = 300 * time.Millisecond })
	hang := func(ctx context.Context) { <-ctx.Done() }
	c.nodes[1].applyHookForTesting.Store(&hang)
	c.nodes[2].applyHookForTesting.Store(&hang)
	resp, body := httpDo(t, "PUT", "http://"+c.nodes[0].HTTPAddr()+"/v1/kv/slow", []byte("v"), map[string]string{"X-Consistency-Level": "QUORUM"})
	if resp.StatusCode != 504 || !strings.Contains(string(body), "needs 2 acknowledgements, 1 arrived before the deadline") {
		t.Fatalf("QUORUM put with hanging replicas: %d %s", resp.StatusCode, body)
	}
	cl, _ := client.New([]string{c.nodes[0].GRPCAddr()}, nil)
	defer cl.Close()
	if _, err := cl.Put(ctxT(t), []byte("slow"), []byte("v"), client.WithConsistency(client.All)); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("ALL put with hanging replicas: %v", err)
	}
	c.nodes[1].applyHookForTesting.Store(nil)
	c.nodes[2].applyHookForTesting.Store(nil)
}

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)   { return v.([]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error { *(v.(*[]byte)) = b; return nil }
func (rawCodec) Name() string                    { return "proto" }

// TestMalformedProtobuf: a request body that is not a protobuf message is
// refused with INVALID_ARGUMENT and changes nothing (codec.go).
func TestMalformedProtobuf(t *testing.T) {
	c := startCluster(t, 1, func(cfg *Config) { cfg.ReplicationFactor = 1 })
	cc, err := grpc.NewClient(c.nodes[0].GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var out []byte
	for _, garbage := range [][]byte{{0xff, 0xff, 0xff}, {0x0a, 0x80}, bytes.Repeat([]byte{0x0a}, 10)} {
		for _, method := range []string{"/tierkv.kv.v1.KV/Put", "/tierkv.kv.v1.KV/Get", "/tierkv.kv.v1.Replica/Apply", "/tierkv.kv.v1.Repair/Push"} {
			err := cc.Invoke(ctxT(t), method, garbage, &out, grpc.ForceCodec(rawCodec{}))
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%s with garbage %x: %v; want INVALID_ARGUMENT", method, garbage, err)
			}
		}
	}
	if k := countEntries(t, c.nodes[0]); k != 0 {
		t.Fatalf("%d versions after malformed requests", k)
	}
}
