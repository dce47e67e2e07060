package lsm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// CompactionStrategy selects how tables are merged.
type CompactionStrategy int

const (
	// Leveled keeps levels 1 and up as sorted runs of non-overlapping
	// tables, each level LevelMultiplier times larger than the one above
	// (LevelDB, RocksDB, Pebble). Low space and read amplification.
	Leveled CompactionStrategy = iota
	// SizeTiered merges tables of similar size into one bigger table
	// (Cassandra's STCS). Low write amplification; more tables per read.
	SizeTiered
)

func (s CompactionStrategy) String() string {
	switch s {
	case Leveled:
		return "leveled"
	case SizeTiered:
		return "size-tiered"
	}
	return fmt.Sprintf("CompactionStrategy(%d)", int(s))
}

// Compression selects the codec of table data blocks.
type Compression int

const (
	// DefaultCompression is S2Compression.
	DefaultCompression Compression = iota
	// NoCompression stores blocks raw.
	NoCompression
	// S2Compression is klauspost/compress's S2, a faster Snappy.
	S2Compression
	// ZstdCompression is Zstandard: smaller, slower.
	ZstdCompression
)

// Clock tells the time. The engine reads time only through a Clock so that
// tests can control it.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// DefaultVersionTime decodes the physical time of a version laid out as a
// hybrid logical clock: milliseconds since the Unix epoch in the high 48
// bits, a logical counter (and tie-break) in the low 16.
func DefaultVersionTime(version uint64) time.Time {
	return time.UnixMilli(int64(version >> 16))
}

// Options configures a DB. The zero value of every field means "use the
// default"; EnsureDefaults fills them in and Validate checks cross-field
// rules. Options are frozen once passed to Open.
type Options struct {
	// FS is the file system the DB lives in. Default: the OS file system.
	FS vfs.FS
	// Provider stores table files. Default: files in the DB directory
	// (objstorage.NewLocal). Tiering plugs its own provider in here.
	Provider objstorage.Provider
	// Logger receives events worth a human's attention (torn WAL tails,
	// background errors). Default: slog.Default().
	Logger *slog.Logger
	// Clock is the time source (tombstone grace, table ages, stall
	// timing). Default: the system clock.
	Clock Clock
	// VersionTime maps a version to the wall time it was assigned; the
	// tombstone grace period is measured with it. Default:
	// DefaultVersionTime.
	VersionTime func(version uint64) time.Time
	// EventListener receives engine events. Default: none.
	EventListener EventListener

	// MaxKeySize bounds key length in bytes. Default 64 KiB.
	MaxKeySize int
	// MaxValueSize bounds value length in bytes. Default 16 MiB.
	MaxValueSize int

	// MemTableSize is the size at which the mutable memtable is sealed and
	// queued for flushing. Default 64 MiB.
	MemTableSize int64
	// MemTableStopWritesThreshold is the number of memtables (the mutable
	// one plus those waiting to flush) at which writes stall. Default 4.
	MemTableStopWritesThreshold int
	// L0CompactionThreshold is the number of L0 tables that triggers a
	// compaction out of L0 (leveled). Default 4.
	L0CompactionThreshold int
	// L0StopWritesThreshold is the number of L0 tables at which writes
	// stall until compaction catches up. Default 20 (leveled); for
	// size-tiered, where every table lives in L0, the default is 2 ×
	// SizeTieredMaxThreshold.
	L0StopWritesThreshold int
	// MaxWriteStall bounds how long a write waits in a stall before it
	// fails with ErrWriteStall. Memory never grows past the memtable
	// bound. Default 10 s.
	MaxWriteStall time.Duration

	// CompactionStrategy selects leveled (default) or size-tiered.
	CompactionStrategy CompactionStrategy
	// LBaseMaxBytes is the target size of L1 (leveled). Default 256 MiB.
	LBaseMaxBytes int64
	// LevelMultiplier is the size ratio between adjacent levels (leveled).
	// Default 10.
	LevelMultiplier int
	// TargetFileSize is the size at which compaction output is cut into a
	// new table (leveled). Default 64 MiB.
	TargetFileSize int64
	// SizeTieredMinThreshold is the number of similar-sized tables that
	// triggers a size-tiered compaction. Default 4.
	SizeTieredMinThreshold int
	// SizeTieredMaxThreshold bounds the tables merged in one size-tiered
	// compaction. Default 32.
	SizeTieredMaxThreshold int
	// SizeTieredBucketLow and SizeTieredBucketHigh bound a bucket: a table
	// joins a bucket whose mean size m satisfies low*m <= size <= high*m.
	// Defaults 0.5 and 1.5 (Cassandra's).
	SizeTieredBucketLow, SizeTieredBucketHigh float64
	// SizeTieredMinTableSize groups all tables smaller than it into one
	// bucket. Default 4 MiB.
	SizeTieredMinTableSize int64
	// TombstoneGracePeriod is how long a tombstone is kept before
	// compaction may purge it, so that replicas that missed the delete
	// learn of it through repair. Default 10 days.
	TombstoneGracePeriod time.Duration
	// CompactionRate limits the bytes per second that compactions write
	// (0: unlimited). It can be changed while running with
	// DB.SetCompactionRate. Default 0.
	CompactionRate int64
	// DisableAutomaticCompactions stops background compactions; Compact
	// still works. For tests.
	DisableAutomaticCompactions bool

	// ValueSeparationThreshold is the value size at and above which a flush
	// moves a value into a blob file and leaves a small reference in the
	// table, so that compactions move references instead of values.
	// Default 1 KiB; negative disables value separation.
	ValueSeparationThreshold int
	// BlobGarbageRatio is the fraction of a blob file's value bytes that
	// must be unreferenced before compactions copy its live values into a
	// new blob file, reclaiming the space. Default 0.5.
	BlobGarbageRatio float64
	// BlobRewritePacing and BlobRewriteMinRate pace the value bytes that
	// compactions copy (blob garbage collection, gcpace.go) to
	// max(BlobRewriteMinRate, BlobRewritePacing × the recent foreground
	// write rate), unpaced while L0 holds 2 × L0CompactionThreshold
	// tables. Defaults 2 and 16 MiB/s; a negative BlobRewritePacing turns
	// pacing off. CompactionRate, if set, applies as well.
	BlobRewritePacing  float64
	BlobRewriteMinRate int64

	// BlockSize is the target uncompressed size of table data blocks.
	// Default 4 KiB.
	BlockSize int
	// Compression is the data block codec. Default S2 (used only where it
	// saves at least 12.5%).
	Compression Compression
	// BloomBitsPerKey sizes the per-table bloom filter. Default 10 (about
	// 1% false positives); negative disables filters.
	BloomBitsPerKey int
	// BlockCacheSize bounds the shared cache of table blocks in bytes.
	// Default 64 MiB; negative disables the cache.
	BlockCacheSize int64

	// WALPreallocateSize is the space reserved up front for a WAL segment.
	// Default: MemTableSize plus 10%.
	WALPreallocateSize int64
	// WALMaxPendingBytes bounds bytes buffered in the WAL awaiting write;
	// writers block above it. Default 16 MiB.
	WALMaxPendingBytes int

	ensured bool
}

// EnsureDefaults fills zero fields with defaults and returns o. A nil
// receiver yields a new Options.
func (o *Options) EnsureDefaults() *Options {
	if o == nil {
		o = &Options{}
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.VersionTime == nil {
		o.VersionTime = DefaultVersionTime
	}
	if o.MaxKeySize == 0 {
		o.MaxKeySize = 64 << 10 // Cassandra's partition key limit
	}
	if o.MaxValueSize == 0 {
		o.MaxValueSize = 16 << 20 // large enough for documents, small enough to bound memory per request
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 64 << 20 // Pebble's default; amortizes flush cost
	}
	if o.MemTableStopWritesThreshold == 0 {
		o.MemTableStopWritesThreshold = 4 // bounds memtable memory to 4 × MemTableSize
	}
	if o.L0CompactionThreshold == 0 {
		o.L0CompactionThreshold = 4 // LevelDB's trigger
	}
	if o.SizeTieredMinThreshold == 0 {
		o.SizeTieredMinThreshold = 4 // Cassandra's min_threshold
	}
	if o.SizeTieredMaxThreshold == 0 {
		o.SizeTieredMaxThreshold = 32 // Cassandra's max_threshold
	}
	if o.L0StopWritesThreshold == 0 {
		o.L0StopWritesThreshold = 20 // LevelDB's kL0_StopWritesTrigger is 12; 20 gives compaction slack on 2 cores
		if o.CompactionStrategy == SizeTiered {
			o.L0StopWritesThreshold = 2 * o.SizeTieredMaxThreshold
		}
	}
	if o.MaxWriteStall == 0 {
		o.MaxWriteStall = 10 * time.Second // shorter than typical client deadlines would hide overload
	}
	if o.LBaseMaxBytes == 0 {
		o.LBaseMaxBytes = 256 << 20
	}
	if o.LevelMultiplier == 0 {
		o.LevelMultiplier = 10
	}
	if o.TargetFileSize == 0 {
		o.TargetFileSize = 64 << 20
	}
	if o.SizeTieredBucketLow == 0 {
		o.SizeTieredBucketLow = 0.5
	}
	if o.SizeTieredBucketHigh == 0 {
		o.SizeTieredBucketHigh = 1.5
	}
	if o.SizeTieredMinTableSize == 0 {
		o.SizeTieredMinTableSize = 4 << 20
	}
	if o.TombstoneGracePeriod == 0 {
		o.TombstoneGracePeriod = 10 * 24 * time.Hour // Cassandra's gc_grace_seconds
	}
	if o.ValueSeparationThreshold == 0 {
		o.ValueSeparationThreshold = 1 << 10 // a reference is ~10 bytes; below 1 KiB the extra read costs more than the rewrite saves
	}
	if o.BlobGarbageRatio == 0 {
		o.BlobGarbageRatio = 0.5 // space amplification of blob files stays below 2x
	}
	if o.BlobRewritePacing == 0 {
		o.BlobRewritePacing = 2 // the copying needs at most 1x at BlobGarbageRatio 0.5; 2x leaves headroom
	}
	if o.BlobRewriteMinRate == 0 {
		o.BlobRewriteMinRate = 16 << 20 // an idle DB still reclaims 1 GiB a minute
	}
	if o.BlockSize == 0 {
		o.BlockSize = 4 << 10
	}
	if o.Compression == DefaultCompression {
		o.Compression = S2Compression // cheap, and skipped per block when it does not pay
	}
	if o.BloomBitsPerKey == 0 {
		o.BloomBitsPerKey = 10
	}
	if o.BlockCacheSize == 0 {
		o.BlockCacheSize = 64 << 20
	}
	if o.WALPreallocateSize == 0 {
		o.WALPreallocateSize = o.MemTableSize + o.MemTableSize/10
	}
	if o.WALMaxPendingBytes == 0 {
		o.WALMaxPendingBytes = 16 << 20
	}
	o.ensured = true
	return o
}

// Validate checks rules between fields. It expects EnsureDefaults to have
// run.
func (o *Options) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("lsm: invalid options: "+format, args...))
		}
	}
	check(o.MemTableSize >= 64<<10, "MemTableSize %d is below 64 KiB", o.MemTableSize)
	check(o.MemTableStopWritesThreshold >= 2, "MemTableStopWritesThreshold %d is below 2", o.MemTableStopWritesThreshold)
	check(o.L0CompactionThreshold >= 1, "L0CompactionThreshold %d is below 1", o.L0CompactionThreshold)
	check(o.L0StopWritesThreshold > o.L0CompactionThreshold || o.CompactionStrategy == SizeTiered,
		"L0StopWritesThreshold %d must exceed L0CompactionThreshold %d", o.L0StopWritesThreshold, o.L0CompactionThreshold)
	check(o.CompactionStrategy == Leveled || o.CompactionStrategy == SizeTiered, "unknown CompactionStrategy %d", o.CompactionStrategy)
	check(o.LevelMultiplier >= 2, "LevelMultiplier %d is below 2", o.LevelMultiplier)
	check(o.TargetFileSize >= 64<<10, "TargetFileSize %d is below 64 KiB", o.TargetFileSize)
	check(o.SizeTieredMinThreshold >= 2, "SizeTieredMinThreshold %d is below 2", o.SizeTieredMinThreshold)
	check(o.SizeTieredMaxThreshold >= o.SizeTieredMinThreshold, "SizeTieredMaxThreshold %d is below SizeTieredMinThreshold %d", o.SizeTieredMaxThreshold, o.SizeTieredMinThreshold)
	check(o.SizeTieredBucketLow > 0 && o.SizeTieredBucketLow < 1, "SizeTieredBucketLow %v is not in (0, 1)", o.SizeTieredBucketLow)
	check(o.SizeTieredBucketHigh > 1, "SizeTieredBucketHigh %v is not above 1", o.SizeTieredBucketHigh)
	check(o.TombstoneGracePeriod > 0, "TombstoneGracePeriod %v is not positive", o.TombstoneGracePeriod)
	check(o.Compression >= NoCompression && o.Compression <= ZstdCompression, "unknown Compression %d", o.Compression)
	check(o.CompactionRate >= 0, "CompactionRate %d is negative", o.CompactionRate)
	check(o.BlobGarbageRatio > 0 && o.BlobGarbageRatio < 1, "BlobGarbageRatio %v is not in (0, 1)", o.BlobGarbageRatio)
	check(o.BlobRewriteMinRate > 0, "BlobRewriteMinRate %d is not positive", o.BlobRewriteMinRate)
	check(o.BlockSize >= 256, "BlockSize %d is below 256", o.BlockSize)
	check(o.MaxKeySize > 0 && o.MaxKeySize <= 1<<20, "MaxKeySize %d is not in (0, 1 MiB]", o.MaxKeySize)
	check(o.MaxValueSize > 0 && o.MaxValueSize <= 256<<20, "MaxValueSize %d is not in (0, 256 MiB]", o.MaxValueSize)
	check(o.MaxWriteStall > 0, "MaxWriteStall %v is not positive", o.MaxWriteStall)
	return errors.Join(errs...)
}

// discardLogger is used where a component needs a logger but nothing
// should be printed.
var discardLogger = slog.New(slog.NewTextHandler(io.Discard, nil))
