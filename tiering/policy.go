package tiering

import (
	"time"

	"github.com/tierkv/tierkv/lsm"
)

// Policy decides which objects are cold: uploaded to the object store and
// then served remotely, their local copies deleted. Its zero values are
// literal (ColdLevel 0 makes every table cold); Options.Policy nil means
// DefaultPolicy(lsm.Leveled).
type Policy struct {
	// Strategy is the engine's compaction strategy: Leveled uses
	// ColdLevel, SizeTiered uses ColdAge.
	Strategy lsm.CompactionStrategy
	// ColdLevel: under leveled compaction, tables at this level or below
	// (a larger level number) are cold. Negative: no table is cold.
	ColdLevel int
	// ColdAge: under size-tiered compaction (all tables in L0), tables
	// written longer ago than ColdAge are cold. Negative: none.
	ColdAge time.Duration
	// BlobColdAge: blob files (large values; most are former WAL
	// segments) written longer ago than BlobColdAge are cold. Negative:
	// none. NB: the public engine API does not say which tables reference
	// a blob file, so age is the rule; old values are the cold ones.
	BlobColdAge time.Duration
}

// DefaultPolicy returns the policy used when Options.Policy is nil.
func DefaultPolicy(strategy lsm.CompactionStrategy) Policy {
	return Policy{
		Strategy:    strategy,
		ColdLevel:   5,              // L5 and L6 hold ~99% of a leveled tree's bytes and are rarely written
		ColdAge:     24 * time.Hour, // size-tiered merges young tables; a day-old table is seldom rewritten soon
		BlobColdAge: 24 * time.Hour,
	}
}

// TableCold reports whether a table is cold at time now.
func (p Policy) TableCold(t lsm.TableInfo, now time.Time) bool {
	switch p.Strategy {
	case lsm.SizeTiered:
		return p.ColdAge >= 0 && now.Sub(t.Created) >= p.ColdAge
	default:
		return p.ColdLevel >= 0 && t.Level >= p.ColdLevel
	}
}

// BlobCold reports whether a blob file is cold at time now.
func (p Policy) BlobCold(b lsm.BlobInfo, now time.Time) bool {
	return p.BlobColdAge >= 0 && now.Sub(b.Created) >= p.BlobColdAge
}

// ColdObjects returns the file numbers of the cold tables and blob files.
func (p Policy) ColdObjects(tables []lsm.TableInfo, blobs []lsm.BlobInfo, now time.Time) (coldTables, coldBlobs []uint64) {
	for _, t := range tables {
		if p.TableCold(t, now) {
			coldTables = append(coldTables, t.FileNum)
		}
	}
	for _, b := range blobs {
		if p.BlobCold(b, now) {
			coldBlobs = append(coldBlobs, b.FileNum)
		}
	}
	return coldTables, coldBlobs
}
