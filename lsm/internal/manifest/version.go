package manifest

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

// Version is an immutable set of tables by level. Level 0 holds tables whose
// key ranges may overlap, ordered by file number; under leveled compaction,
// every other level holds non-overlapping tables ordered by key.
type Version struct {
	Levels [NumLevels][]*TableMeta
	// Blobs are the live blob files, ordered by file number.
	Blobs []*BlobMeta
}

// Apply returns the version that results from applying e to v. It fails if
// e deletes a table that v does not hold or adds one twice.
func (v *Version) Apply(e *VersionEdit) (*Version, error) {
	nv := &Version{}
	for l := range v.Levels {
		nv.Levels[l] = slices.Clone(v.Levels[l])
	}
	nv.Blobs = slices.Clone(v.Blobs)
	for _, n := range e.DeletedBlobs {
		i := slices.IndexFunc(nv.Blobs, func(b *BlobMeta) bool { return b.FileNum == n })
		if i < 0 {
			return nil, base.CorruptionErrorf("manifest: edit deletes blob file %s absent from the version", n)
		}
		nv.Blobs = slices.Delete(nv.Blobs, i, i+1)
	}
	for _, b := range e.AddedBlobs {
		if slices.ContainsFunc(nv.Blobs, func(o *BlobMeta) bool { return o.FileNum == b.FileNum }) {
			return nil, base.CorruptionErrorf("manifest: edit adds blob file %s twice", b.FileNum)
		}
		nv.Blobs = append(nv.Blobs, b)
	}
	slices.SortFunc(nv.Blobs, func(a, b *BlobMeta) int { return int64Cmp(int64(a.FileNum), int64(b.FileNum)) })
	for _, d := range e.Deleted {
		i := slices.IndexFunc(nv.Levels[d.Level], func(m *TableMeta) bool { return m.FileNum == d.FileNum })
		if i < 0 {
			return nil, base.CorruptionErrorf("manifest: edit deletes table %s absent from L%d", d.FileNum, d.Level)
		}
		nv.Levels[d.Level] = slices.Delete(nv.Levels[d.Level], i, i+1)
	}
	for _, a := range e.Added {
		for l := range nv.Levels {
			if slices.ContainsFunc(nv.Levels[l], func(m *TableMeta) bool { return m.FileNum == a.Meta.FileNum }) {
				return nil, base.CorruptionErrorf("manifest: edit adds table %s twice", a.Meta.FileNum)
			}
		}
		nv.Levels[a.Level] = append(nv.Levels[a.Level], a.Meta)
	}
	slices.SortFunc(nv.Levels[0], func(a, b *TableMeta) int { return int64Cmp(int64(a.FileNum), int64(b.FileNum)) })
	for l := 1; l < NumLevels; l++ {
		slices.SortFunc(nv.Levels[l], func(a, b *TableMeta) int { return bytes.Compare(a.Smallest, b.Smallest) })
	}
	return nv, nil
}

func int64Cmp(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// CheckOrdering verifies that levels 1 and up hold non-overlapping tables.
func (v *Version) CheckOrdering() error {
	for l := 1; l < NumLevels; l++ {
		for i := 1; i < len(v.Levels[l]); i++ {
			if bytes.Compare(v.Levels[l][i-1].Largest, v.Levels[l][i].Smallest) >= 0 {
				return fmt.Errorf("manifest: L%d tables %s and %s overlap", l, v.Levels[l][i-1].FileNum, v.Levels[l][i].FileNum)
			}
		}
	}
	return nil
}

// Overlaps returns the tables of level l whose key ranges intersect
// [smallest, largest].
func (v *Version) Overlaps(l int, smallest, largest []byte) []*TableMeta {
	var out []*TableMeta
	for _, m := range v.Levels[l] {
		if bytes.Compare(m.Largest, smallest) >= 0 && bytes.Compare(m.Smallest, largest) <= 0 {
			out = append(out, m)
		}
	}
	return out
}

// LevelSize returns the total size of the tables of level l.
func (v *Version) LevelSize(l int) uint64 {
	var s uint64
	for _, m := range v.Levels[l] {
		s += m.Size
	}
	return s
}

// NumTables returns the number of tables in all levels.
func (v *Version) NumTables() int {
	n := 0
	for l := range v.Levels {
		n += len(v.Levels[l])
	}
	return n
}

// BlobLiveBytes returns, per blob file, the value bytes that tables of v
// still reference.
func (v *Version) BlobLiveBytes() map[base.FileNum]uint64 {
	live := map[base.FileNum]uint64{}
	for l := range v.Levels {
		for _, m := range v.Levels[l] {
			for _, r := range m.BlobRefs {
				live[r.FileNum] += r.ValueBytes
			}
		}
	}
	return live
}

// UnreferencedBlobs returns the blob files of v that no table references.
func (v *Version) UnreferencedBlobs() []base.FileNum {
	live := v.BlobLiveBytes()
	var out []base.FileNum
	for _, b := range v.Blobs {
		if _, ok := live[b.FileNum]; !ok {
			out = append(out, b.FileNum)
		}
	}
	return out
}

// Snapshot returns an edit that recreates v from an empty version.
func (v *Version) Snapshot() *VersionEdit {
	e := &VersionEdit{AddedBlobs: slices.Clone(v.Blobs)}
	for l := range v.Levels {
		for _, m := range v.Levels[l] {
			e.Added = append(e.Added, NewTable{Level: l, Meta: m})
		}
	}
	return e
}
