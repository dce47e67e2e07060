package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/node/shards"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/erasure"
	"github.com/tierkv/tierkv/objectstore/localfs"
	"github.com/tierkv/tierkv/objectstore/s3"
	"github.com/tierkv/tierkv/ring"
	"github.com/tierkv/tierkv/ring/gossip"
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
// start and not a stream of failed uploads later; with a fallback store it
// is a warning (the fallback serves while the bucket is down).
func (n *Node) openBuckets() error {
	c := &n.cfg
	var probeErr error
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
				probeErr = fmt.Errorf("node: object store %s is not usable (check object_store.endpoint, bucket, region and credentials): %w", desc, err)
			}
		}
	}
	if k, m := c.ObjectStore.PeerShardsData, c.ObjectStore.PeerShardsParity; k > 0 {
		if err := n.openPeerShards(k, m); err != nil {
			return err
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
	if probeErr != nil {
		if n.fallback == nil {
			return probeErr
		}
		// The fallback serves reads and restores meanwhile; uploads wait
		// for the bucket.
		n.log.Warn("starting with the object store unreachable; reads fall back to the fallback store", "err", probeErr)
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
func (n *Node) openTiering(dir string, eo *lsm.Options) error {
	t := n.cfg.Tiering
	p := tiering.DefaultPolicy(eo.CompactionStrategy)
	p.ColdLevel = t.ColdLevel
	if t.ColdAge != 0 {
		p.ColdAge = t.ColdAge
	}
	if t.BlobColdAge != 0 {
		p.BlobColdAge = t.BlobColdAge
	}
	m, err := tiering.Open(tiering.Options{
		FS:              eo.FS, // the engine's files, wherever they live
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

// openPeerShards opens this node's shard store (the shards peers place
// here, served by the Shards service) and makes the erasure store over its
// peers the tiering fallback (docs/shards.md).
func (n *Node) openPeerShards(k, m int) error {
	local, err := localfs.Open(filepath.Join(n.cfg.DataDir, "shards"))
	if err != nil {
		return fmt.Errorf("node: shard store: %w", err)
	}
	n.bucketClosers = append(n.bucketClosers, local.Close)
	n.shardSrv = shards.NewServer(local, shards.ServerOptions{})
	n.shardOpts = shards.Options{
		Self: n.id,
		Ring: n.currentRing,
		Conn: func(id ring.NodeID) (grpc.ClientConnInterface, error) { return n.conn(id) },
		K:    k, M: m,
		OnReconstruct: func(name string, bad []erasure.ShardError) {
			n.log.Warn("fallback object read with bad shards", "object", name, "bad", len(bad))
		},
	}
	eb, err := shards.NewErasure(n.shardOpts)
	if err != nil {
		return fmt.Errorf("node: peer shards: %w", err)
	}
	n.bucketClosers = append(n.bucketClosers, eb.Close)
	n.fallback = objectstore.WithRetry(eb, objectstore.RetryOptions{})
	return nil
}

// currentRing is the gossiped ring, or an empty one before gossip starts.
func (n *Node) currentRing() *ring.Ring {
	if g := n.g; g != nil {
		return g.Ring()
	}
	r, _ := ring.New(&ring.Options{ReplicationFactor: n.cfg.ReplicationFactor, VNodes: n.cfg.VNodes})
	return r
}

// RebuildShards restores full redundancy of this node's objects' shards on
// its peers (after a peer lost its shard store, joined or left).
func (n *Node) RebuildShards(ctx context.Context) (shards.RebuildStats, error) {
	if n.shardSrv == nil {
		return shards.RebuildStats{}, errorf(ErrInvalidArgument, "peer shards are off (object_store.peer_shards_data)")
	}
	n.shardRebuild.Lock()
	defer n.shardRebuild.Unlock()
	st, err := shards.Rebuild(ctx, n.shardOpts, shards.RebuildOptions{Prefix: string(n.id) + "/"})
	n.log.Info("shard rebuild", "objects", st.Objects, "repaired", st.Repaired, "rebuilt", st.ShardsRebuilt, "moved", st.ShardsMoved, "skipped", st.Skipped, "failed", st.Failed, "err", err)
	return st, err
}

// kickShardRebuild schedules a rebuild of this node's shards on its peers
// (after ShardRebuildDelay, so that a burst of membership changes causes
// one). It does nothing when peer shards are off.
func (n *Node) kickShardRebuild() {
	if n.shardSrv == nil {
		return
	}
	select {
	case n.shardKick <- struct{}{}:
	default:
	}
}

// shardLoop rebuilds this node's shards on its peers after membership
// changes and every hour: a replaced peer comes back with an empty shard
// store, a joining or leaving one changes the placement.
func (n *Node) shardLoop() {
	defer n.bg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	ctx, cancel := n.backgroundContext()
	defer cancel()
	delay := n.cfg.ObjectStore.PeerShardsRebuildDelay
	var retry <-chan time.Time // a rebuild that skipped objects runs again
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		case <-retry:
		case <-n.shardKick:
			select {
			case <-n.stop:
				return
			case <-time.After(n.cfg.ObjectStore.PeerShardsRebuildDelay):
			}
		}
		st, err := n.RebuildShards(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil || st.Skipped > 0 || st.Failed > 0 {
			// A peer was unreachable (perhaps a replacement not
			// serving yet): again later, backing off to 10 minutes.
			n.log.Warn("shard rebuild incomplete; retrying", "skipped", st.Skipped, "failed", st.Failed, "in", delay, "err", err)
			retry = time.After(delay)
			delay = min(2*delay, 10*time.Minute)
		} else {
			retry, delay = nil, n.cfg.ObjectStore.PeerShardsRebuildDelay
		}
	}
}

// watchMembership kicks a shard rebuild when a member joins, leaves, comes
// up (perhaps a replacement with an empty shard store), comes back with a
// new generation or changes state.
func (n *Node) watchMembership(ev gossip.Event) {
	if n.shardSrv == nil {
		return
	}
	n.members.Lock()
	defer n.members.Unlock()
	if n.members.seen == nil {
		n.members.seen = map[ring.NodeID]gossip.Meta{}
	}
	prev, ok := n.members.seen[ev.Member.ID]
	n.members.seen[ev.Member.ID] = ev.Member.Meta
	switch {
	case ev.Type == gossip.EventLeave, ev.Type == gossip.EventJoin && !ok, ev.Type == gossip.EventUp:
		n.kickShardRebuild()
	case ok && (prev.Generation != ev.Member.Generation || prev.State != ev.Member.State):
		n.kickShardRebuild()
	}
}
