package node

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/localfs"
	"github.com/tierkv/tierkv/objectstore/miniotest"
)

func listAll(t *testing.T, b objectstore.Bucket, prefix string) []string {
	t.Helper()
	var out []string
	if err := objectstore.Iter(context.Background(), b, prefix, func(name string) error {
		out = append(out, name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTieringWired: every node tiers to the filesystem bucket; with an
// aggressive policy (every table cold) the tables of a flush are uploaded
// under the node's prefix of one shared bucket, reads are then served from
// the bucket, the metrics say so, and a graceful shutdown uploads a
// manifest backup.
func TestTieringWired(t *testing.T) {
	bucketDir := filepath.Join(t.TempDir(), "bucket")
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.ObjectStore.Dir = bucketDir // one bucket for the cluster, as in `tierkv dev`
		cfg.Tiering.ColdLevel = 0       // every table is cold
		cfg.Tiering.CacheSize = -1      // no disk cache: every read of a remote table is a GET
		cfg.MemTableSize = 64 << 10
	})
	ctx := ctxT(t)
	const keys = 200
	val := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 100+i) }
	for i := range keys {
		if _, err := c.nodes[0].Put(ctx, fmt.Appendf(nil, "k%04d", i), val(i), All, 0); err != nil {
			t.Fatal(err)
		}
	}
	n1 := c.nodes[0]
	if err := n1.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := n1.Tiering().Upload(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := localfs.Open(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	tables := listAll(t, b, "n1/tables/")
	if len(tables) == 0 {
		t.Fatalf("no table objects under n1/ in the bucket; bucket holds %q", listAll(t, b, ""))
	}
	tm := n1.Tiering().Metrics()
	if tm.RemoteObjects == 0 || tm.RemoteBytes == 0 || tm.BytesUploaded == 0 {
		t.Fatalf("tiering metrics after upload: %+v", tm)
	}
	// The engine keeps reading an open table's unlinked local file until
	// it closes the table; reads are right meanwhile.
	for i := range keys {
		e, err := n1.ReadLocalForTesting(fmt.Appendf(nil, "k%04d", i))
		if err != nil || !bytes.Equal(e.Value, val(i)) {
			t.Fatalf("k%04d on n1: %v, %d bytes", i, err, len(e.Value))
		}
	}
	// And through the coordinator at ALL.
	for i := 0; i < keys; i += 17 {
		got, _, err := n1.Get(ctx, fmt.Appendf(nil, "k%04d", i), All)
		if err != nil || !bytes.Equal(got, val(i)) {
			t.Fatalf("Get k%04d: %v", i, err)
		}
	}
	// Metrics are exported.
	_, body := httpDo(t, "GET", "http://"+n1.HTTPAddr()+"/metrics", nil, nil)
	for _, s := range []string{`tierkv_disk_usage_bytes{tier="remote"} `, "tierkv_tiering_upload_bytes_total ", "tierkv_tiering_uploads_total "} {
		i := strings.Index(string(body), s)
		if i < 0 || strings.HasPrefix(string(body[i+len(s):]), "0\n") {
			t.Errorf("/metrics: %s missing or 0", s)
		}
	}
	// Graceful shutdown uploads a manifest backup.
	if got := listAll(t, b, "n1/manifests/"); len(got) != 0 {
		t.Fatalf("manifest backups before shutdown: %q", got)
	}
	c.stop(0)
	if got := listAll(t, b, "n1/manifests/"); len(got) != 1 {
		t.Fatalf("manifest backups after shutdown: %q", got)
	}
	// The restarted node serves the remote tables from the bucket.
	c.start(0)
	c.waitReady()
	n1 = c.nodes[0]
	if tm := n1.Tiering().Metrics(); tm.RemoteObjects == 0 || tm.GetOps != 0 {
		t.Fatalf("restarted n1: %+v", tm)
	}
	for i := range keys {
		e, err := n1.ReadLocalForTesting(fmt.Appendf(nil, "k%04d", i))
		if err != nil || !bytes.Equal(e.Value, val(i)) {
			t.Fatalf("k%04d on restarted n1: %v", i, err)
		}
	}
	if tm := n1.Tiering().Metrics(); tm.GetOps == 0 || tm.RemoteReads == 0 {
		t.Fatalf("reads of remote tables made no GET: %+v", tm)
	}
	_, body = httpDo(t, "GET", "http://"+n1.HTTPAddr()+"/metrics", nil, nil)
	for _, s := range []string{`tierkv_disk_usage_bytes{tier="remote"} `, "tierkv_tiering_get_requests_total ", "tierkv_tiering_download_bytes_total "} {
		i := strings.Index(string(body), s)
		if i < 0 || strings.HasPrefix(string(body[i+len(s):]), "0\n") {
			t.Errorf("/metrics after restart: %s missing or 0", s)
		}
	}
}

// TestObjectStoreConfig: bad S3 settings are clear errors at Open, before
// the node does anything.
func TestObjectStoreConfig(t *testing.T) {
	base := func() *Config {
		cfg := LocalConfig()
		cfg.DataDir = t.TempDir()
		cfg.Logger = quietLogger()
		cfg.ObjectStore = ObjectStoreConfig{Type: "s3", Bucket: "b", Endpoint: "http://127.0.0.1:1", AccessKey: "k", SecretKey: "s", PathStyle: true}
		return cfg
	}
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"no bucket":        {func(c *Config) { c.ObjectStore.Bucket = "" }, "object_store.bucket is required"},
		"endpoint no URL":  {func(c *Config) { c.ObjectStore.Endpoint = "127.0.0.1:9000" }, "want an http:// or https:// URL"},
		"half credentials": {func(c *Config) { c.ObjectStore.SecretKey = "" }, "give both or neither"},
		"bad type":         {func(c *Config) { c.ObjectStore.Type = "gcs" }, "want filesystem or s3"},
		"unreachable":      {func(c *Config) {}, `s3 bucket "b" at http://127.0.0.1:1 is not usable`},
		"bad cold level":   {func(c *Config) { c.ObjectStore = ObjectStoreConfig{Type: "filesystem"}; c.Tiering.ColdLevel = 9 }, "tiering.cold_level 9 out of range"},
	} {
		cfg := base()
		tc.mod(cfg)
		start := time.Now()
		n, err := Open(cfg)
		if err == nil {
			n.Close()
			t.Errorf("%s: Open succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q lacks %q", name, err, tc.want)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("%s: took %v", name, d)
		}
	}
}

// TestTieringS3: a node configured for S3 (a real MinIO server) tiers to
// it: table objects under the node's prefix, and a manifest backup after a
// graceful shutdown. A bucket that does not exist is a clear error at Open.
func TestTieringS3(t *testing.T) {
	srv := miniotest.Start(t)
	name := srv.NewBucket(t)
	c := startCluster(t, 1, func(cfg *Config) {
		cfg.ReplicationFactor = 1
		cfg.ObjectStore = ObjectStoreConfig{Type: "s3", Endpoint: srv.Endpoint, Bucket: name,
			AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PathStyle: true}
		cfg.Tiering.ColdLevel = 0
	})
	ctx := ctxT(t)
	for i := range 50 {
		if _, err := c.nodes[0].Put(ctx, fmt.Appendf(nil, "k%02d", i), []byte("v"), One, 0); err != nil {
			t.Fatal(err)
		}
	}
	n := c.nodes[0]
	if !strings.Contains(n.BucketDescription(), name) {
		t.Fatalf("bucket description %q", n.BucketDescription())
	}
	if err := n.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := n.Tiering().Upload(ctx); err != nil {
		t.Fatal(err)
	}
	list := func(prefix string) int {
		k := 0
		for o := range srv.Client.ListObjects(ctx, name, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			k++
		}
		return k
	}
	if list("n1/tables/") == 0 {
		t.Fatal("no table object under n1/tables/ in MinIO")
	}
	c.stop(0)
	if list("n1/manifests/") != 1 {
		t.Fatal("no manifest backup in MinIO after shutdown")
	}

	cfg := c.config(0)
	cfg.DataDir = t.TempDir()
	cfg.ObjectStore.Bucket = name + "-missing"
	if n, err := Open(cfg); err == nil {
		n.Close()
		t.Fatal("Open with a missing bucket succeeded")
	} else if !strings.Contains(err.Error(), "is not usable") || !strings.Contains(err.Error(), name+"-missing") {
		t.Fatalf("missing bucket: %v", err)
	}
}
