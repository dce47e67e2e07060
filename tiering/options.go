package tiering

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/vfs"
	"github.com/tierkv/tierkv/objectstore"
)

// Options configures a Manager. Zero fields mean "use the default";
// EnsureDefaults fills them in and Validate checks them. Options are frozen
// once passed to Open.
type Options struct {
	// FS and Dir are the engine's file system and DB directory: local
	// objects, the catalog (TIERCAT), kept metadata (tiermeta/) and the
	// block cache (tiercache/) live there. Default FS: the OS.
	FS  vfs.FS
	Dir string
	// NodeID names this node's objects in the bucket
	// (<NodeID>/tables/NNNNNN.sst, <NodeID>/blobs/NNNNNN.blob,
	// <NodeID>/manifests/<seq>), so several nodes can share a bucket.
	// Required; it must be a valid object name segment.
	NodeID string
	// Bucket is the primary object store. Required.
	Bucket objectstore.Bucket
	// Fallback, if set, receives a copy of every uploaded object and
	// manifest backup; reads, restores and hydration use it (through
	// objectstore/fallback) when Bucket fails, says an object does not
	// exist, or is slower than HedgeDelay. In a cluster it is an
	// erasure-coded store over peers; any Bucket works.
	Fallback objectstore.Bucket
	// Policy says which objects are cold. Default: DefaultPolicy(Leveled).
	Policy *Policy
	// Clock tells the time for the policy and GC delays. Default: the
	// system clock.
	Clock lsm.Clock
	// Logger receives uploads failures and other events. Default:
	// slog.Default().
	Logger *slog.Logger

	// CacheSize bounds the local disk cache of remote data chunks, in
	// bytes. Default 1 GiB; negative disables the cache.
	CacheSize int64
	// ChunkSize is the size (and alignment) of the ranged GETs that fill
	// the cache. Default 64 KiB: larger than a data block, small enough
	// that a point read does not fetch much it does not need.
	ChunkSize int64
	// UploadConcurrency bounds concurrent uploads (and hydration
	// downloads). Default 4.
	UploadConcurrency int
	// UploadRate bounds upload bandwidth in bytes per second; 0 means
	// unlimited.
	UploadRate int64
	// HedgeDelay: a remote read not answered by Bucket within HedgeDelay
	// is also sent to Fallback, and the first answer wins (the other is
	// cancelled). 0 disables hedging (Fallback is then used only when
	// Bucket fails or lost the object).
	HedgeDelay time.Duration
	// Retry is the retry policy of object store calls.
	Retry objectstore.RetryOptions

	// UploadInterval is how often the background loop uploads cold
	// objects. Default 30 s.
	UploadInterval time.Duration
	// BackupInterval is how often the background loop uploads a manifest
	// backup (and runs GC). Default 10 min.
	BackupInterval time.Duration
	// BackupRetention is the number of newest manifest backups kept.
	// Default 3.
	BackupRetention int
	// GCDelay is how long an object must stay unreferenced by every
	// retained manifest backup (and by the catalog) before GC deletes it.
	// Default 1 h.
	GCDelay time.Duration
	// DisableBackground starts no background loop: the caller runs
	// Upload, Backup and GC (tests, tools).
	DisableBackground bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// EnsureDefaults fills zero fields with defaults and returns o.
func (o *Options) EnsureDefaults() *Options {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Policy == nil {
		p := DefaultPolicy(lsm.Leveled)
		o.Policy = &p
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.CacheSize == 0 {
		o.CacheSize = 1 << 30
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = 64 << 10
	}
	if o.UploadConcurrency == 0 {
		o.UploadConcurrency = 4
	}
	if o.UploadInterval == 0 {
		o.UploadInterval = 30 * time.Second
	}
	if o.BackupInterval == 0 {
		o.BackupInterval = 10 * time.Minute
	}
	if o.BackupRetention == 0 {
		o.BackupRetention = 3
	}
	if o.GCDelay == 0 {
		o.GCDelay = time.Hour // far longer than an upload or a restore's listing takes
	}
	o.Retry = o.Retry.EnsureDefaults()
	return o
}

// Validate checks the options. It expects EnsureDefaults to have run.
func (o *Options) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("tiering: invalid options: "+format, args...))
		}
	}
	check(o.Dir != "", "Dir is empty")
	check(o.Bucket != nil, "Bucket is nil")
	check(objectstore.ValidateName(o.NodeID) == nil && o.NodeID != "" && !containsSlash(o.NodeID), "NodeID %q is not a valid name segment", o.NodeID)
	check(o.ChunkSize >= 4<<10, "ChunkSize %d is below 4 KiB", o.ChunkSize)
	check(o.UploadConcurrency >= 1, "UploadConcurrency %d is below 1", o.UploadConcurrency)
	check(o.UploadRate >= 0, "UploadRate %d is negative", o.UploadRate)
	check(o.HedgeDelay >= 0, "HedgeDelay %v is negative", o.HedgeDelay)
	check(o.BackupRetention >= 1, "BackupRetention %d is below 1", o.BackupRetention)
	check(o.GCDelay >= 0, "GCDelay %v is negative", o.GCDelay)
	return errors.Join(errs...)
}

func containsSlash(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return true
		}
	}
	return false
}
