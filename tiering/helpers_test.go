package tiering

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/erasure"
	"github.com/tierkv/tierkv/objectstore/faulty"
	"github.com/tierkv/tierkv/objectstore/miniotest"
	"github.com/tierkv/tierkv/objectstore/s3"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// manualClock is a Clock that moves only when told to.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func newManualClock() *manualClock {
	return &manualClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func noSleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// fastRetry retries without sleeping, twice.
var fastRetry = objectstore.RetryOptions{MaxAttempts: 2, Sleep: noSleep}

// smallDBOptions returns engine options under which flushes, compactions
// and level changes happen after a few hundred small writes (as the lsm
// model test's).
func smallDBOptions(fs vfs.FS, strategy lsm.CompactionStrategy, clock lsm.Clock, p objstorage.Provider) *lsm.Options {
	return &lsm.Options{
		FS:                       fs,
		Provider:                 p,
		Logger:                   discard,
		Clock:                    clock,
		VersionTime:              func(uint64) time.Time { return clock.Now() },
		CompactionStrategy:       strategy,
		MemTableSize:             64 << 10,
		TargetFileSize:           64 << 10,
		LBaseMaxBytes:            128 << 10,
		LevelMultiplier:          4,
		L0CompactionThreshold:    2,
		SizeTieredMinThreshold:   2,
		SizeTieredMaxThreshold:   4,
		SizeTieredMinTableSize:   16 << 10,
		BlockSize:                1 << 10,
		ValueSeparationThreshold: 128,
		BlockCacheSize:           256 << 10,
		WALPreallocateSize:       128 << 10,
	}
}

// allCold makes every table and blob file cold at once.
func allCold(strategy lsm.CompactionStrategy) *Policy {
	return &Policy{Strategy: strategy, ColdLevel: 0, ColdAge: 0, BlobColdAge: 0}
}

// testOptions returns Manager options for tests: no background loop, no
// sleeping retries, small chunks.
func testOptions(fs vfs.FS, dir string, b, fallback objectstore.Bucket, p *Policy, clock lsm.Clock) Options {
	return Options{
		FS: fs, Dir: dir, NodeID: "node1", Bucket: b, Fallback: fallback, Policy: p, Clock: clock,
		Logger: discard, ChunkSize: 4 << 10, CacheSize: 1 << 20, Retry: fastRetry,
		DisableBackground: true, GCDelay: time.Hour,
	}
}

// minioBucket returns a bucket on a fresh MinIO server (skipped, loudly,
// without a MinIO binary outside CI).
func minioBucket(t testing.TB) (objectstore.Bucket, *miniotest.Server) {
	t.Helper()
	return minioBucketOn(t, miniotest.Start(t))
}

// killableMinioBucket is minioBucket on a server of the test's own, which
// it may Kill and Restart.
func killableMinioBucket(t testing.TB) (objectstore.Bucket, *miniotest.Server) {
	t.Helper()
	return minioBucketOn(t, miniotest.StartOwn(t))
}

func minioBucketOn(t testing.TB, srv *miniotest.Server) (objectstore.Bucket, *miniotest.Server) {
	t.Helper()
	name := srv.NewBucket(t)
	b, err := s3.Open(context.Background(), s3.Options{
		Bucket: name, Endpoint: srv.Endpoint, Region: "us-east-1", UsePathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey,
		Retry: objectstore.RetryOptions{MaxAttempts: 2, Sleep: noSleep},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, srv
}

// erasureOver returns an RS(k, m) bucket over k+m faulty mem buckets.
func erasureOver(t *testing.T, k, m int) (*erasure.Bucket, []*faulty.Bucket) {
	t.Helper()
	var fbs []*faulty.Bucket
	var bs []objectstore.Bucket
	for i := 0; i < k+m; i++ {
		fb := faulty.New(objectstore.NewMemBucket(), faulty.Options{Sleep: noSleep})
		fbs = append(fbs, fb)
		bs = append(bs, fb)
	}
	eb, err := erasure.New(bs, erasure.Options{DataShards: k, ParityShards: m})
	if err != nil {
		t.Fatal(err)
	}
	return eb, fbs
}

// eventually polls cond every millisecond until it holds, failing the test
// after timeout. It is for conditions reached by real-time background
// work; tests never wait for a fixed time.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("after %v: "+format, append([]any{timeout}, args...)...)
		case <-tick.C:
		}
	}
}
