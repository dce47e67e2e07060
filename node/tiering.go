package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/localfs"
	"github.com/tierkv/tierkv/objectstore/s3"
	"github.com/tierkv/tierkv/tiering"
)

// probeTimeout bounds the check, at Open, that an S3 bucket answers.
const probeTimeout = 30 * time.Second

// BucketDir returns the directory of the filesystem bucket a node with
// configuration c uses ("" for an S3 bucket).
func (c *Config) BucketDir() string {
	if c.ObjectStore.Type != "filesystem" {
		return ""
	}
	if c.ObjectStore.Dir != "" {
		return c.ObjectStore.Dir
	}
	return filepath.Join(c.DataDir, "bucket")
}

// openBuckets opens the tiering bucket (and the optional fallback), each
// wrapped with objectstore.WithRetry. An S3 bucket is probed with one
// List, so that a bad endpoint, bucket or credentials is a clear error at
// start and not a stream of failed uploads later.
func (n *Node) openBuckets() error {
	c := &n.cfg
	if c.ObjectStoreBucket != nil {
		n.bucket, n.bucketDesc = c.ObjectStoreBucket, "(embedded bucket)"
	} else {
		switch c.ObjectStore.Type {
		case "filesystem":
			dir := c.BucketDir()
			b, err := openSharedLocalFS(dir)
			if err != nil {
				return fmt.Errorf("node: object store: %w", err)
			}
			n.bucketClosers = append(n.bucketClosers, b.Close)
			n.bucket, n.bucketDesc = objectstore.WithRetry(b, objectstore.RetryOptions{}), "filesystem "+b.dir
		case "s3":
			o := c.ObjectStore
			desc := fmt.Sprintf("s3 bucket %q at %s", o.Bucket, o.Endpoint)
			if o.Endpoint == "" {
				desc = fmt.Sprintf("s3 bucket %q (AWS, region %q)", o.Bucket, o.Region)
			}
			ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
			defer cancel()
			raw, err := s3.Open(ctx, s3.Options{
				Bucket: o.Bucket, Endpoint: o.Endpoint, Region: o.Region, UsePathStyle: o.PathStyle,
				AccessKeyID: o.AccessKey, SecretAccessKey: o.SecretKey,
				// One retry layer: WithRetry below (tiering retries whole
				// operations on top of it).
				Retry: objectstore.RetryOptions{MaxAttempts: 1},
			})
			if err != nil {
				return fmt.Errorf("node: object store %s: %w", desc, err)
			}
			n.bucketClosers = append(n.bucketClosers, raw.Close)
			n.bucket, n.bucketDesc = objectstore.WithRetry(raw, objectstore.RetryOptions{}), desc
			if _, _, err := n.bucket.List(ctx, c.ID+"/", "", 1); err != nil {
				return fmt.Errorf("node: object store %s is not usable (check object_store.endpoint, bucket, region and credentials): %w", desc, err)
			}
		}
	}
	if d := c.ObjectStore.FallbackDir; d != "" {
		b, err := openSharedLocalFS(d)
		if err != nil {
			return fmt.Errorf("node: fallback object store: %w", err)
		}
		n.bucketClosers = append(n.bucketClosers, b.Close)
		n.fallback = objectstore.WithRetry(b, objectstore.RetryOptions{})
	}
	return nil
}

func (n *Node) closeBuckets() error {
	var errs []error
	for _, f := range n.bucketClosers {
		errs = append(errs, f())
	}
	n.bucketClosers = nil
	return errors.Join(errs...)
}

// openTiering opens the tiering manager of the engine directory dir; it
// becomes the engine's objstorage.Provider.
func (n *Node) openTiering(dir string, strategy lsm.CompactionStrategy) error {
	t := n.cfg.Tiering
	p := tiering.DefaultPolicy(strategy)
	p.ColdLevel = t.ColdLevel
	if t.ColdAge != 0 {
		p.ColdAge = t.ColdAge
	}
	if t.BlobColdAge != 0 {
		p.BlobColdAge = t.BlobColdAge
	}
	m, err := tiering.Open(tiering.Options{
		Dir:             dir,
		NodeID:          n.cfg.ID,
		Bucket:          n.bucket,
		Fallback:        n.fallback,
		Policy:          &p,
		Clock:           n.cfg.Clock,
		Logger:          n.log.With("component", "tiering"),
		CacheSize:       t.CacheSize,
		UploadRate:      t.UploadRate,
		HedgeDelay:      t.HedgeDelay,
		UploadInterval:  t.UploadInterval,
		BackupInterval:  t.BackupInterval,
		BackupRetention: t.BackupRetention,
		GCDelay:         t.GCDelay,
	})
	if err != nil {
		return fmt.Errorf("node: open tiering: %w", err)
	}
	n.tier = m
	return nil
}

// Tiering returns the node's tiering manager (uploads, backups, metrics).
func (n *Node) Tiering() *tiering.Manager { return n.tier }

// BucketDescription says where the node's tiering bucket is.
func (n *Node) BucketDescription() string { return n.bucketDesc }

// sharedLocalFS is one localfs.Bucket per directory in this process, so
// that nodes sharing a bucket directory (`tierkv dev`, tests) do not delete
// each other's in-flight temporary files when one of them opens it.
var sharedLocalFS struct {
	sync.Mutex
	m map[string]*sharedBucket
}

type sharedBucket struct {
	*localfs.Bucket
	dir  string
	refs int
}

// localFSRef is a reference to a shared bucket; Close drops it.
type localFSRef struct {
	*sharedBucket
	once sync.Once
}

func (r *localFSRef) Close() error {
	var err error
	r.once.Do(func() {
		sharedLocalFS.Lock()
		defer sharedLocalFS.Unlock()
		r.refs--
		if r.refs == 0 {
			delete(sharedLocalFS.m, r.dir)
			err = r.Bucket.Close()
		}
	})
	return err
}

func openSharedLocalFS(dir string) (*localFSRef, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	sharedLocalFS.Lock()
	defer sharedLocalFS.Unlock()
	if sharedLocalFS.m == nil {
		sharedLocalFS.m = map[string]*sharedBucket{}
	}
	sb := sharedLocalFS.m[abs]
	if sb == nil {
		b, err := localfs.Open(abs)
		if err != nil {
			return nil, err
		}
		sb = &sharedBucket{Bucket: b, dir: abs}
		sharedLocalFS.m[abs] = sb
	}
	sb.refs++
	return &localFSRef{sharedBucket: sb}, nil
}
