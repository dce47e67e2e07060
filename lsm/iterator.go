package lsm

import (
	"bytes"
	"container/heap"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

// IterOptions bound and shape an iteration.
type IterOptions struct {
	// LowerBound is the inclusive lower bound; nil means no bound.
	LowerBound []byte
	// UpperBound is the exclusive upper bound; nil means no bound.
	UpperBound []byte
	// IncludeTombstones makes the iterator stop at keys whose newest
	// version is a tombstone (Deleted reports them).
	IncludeTombstones bool
	// MinVersion, if set, limits the iterator to keys whose newest version
	// is at least MinVersion: tables whose versions are all below it are
	// not read, and older values are not resolved (a replacement node
	// asks its peers for what is newer than its backup this way).
	MinVersion uint64
}

// Iterator walks keys in increasing order, yielding each key's newest
// version. It sees a consistent set of tables and the memtables as they were
// at creation (plus, possibly, later writes to those memtables). It is not
// safe for concurrent use; Close it to release the tables it pins.
type Iterator struct {
	d     *DB
	rs    *readState
	opts  IterOptions
	merge *mergingIter
	cur   base.Entry
	valid bool
	err   error
}

// NewIter returns an iterator; opts may be nil. Position it with First or
// SeekGE.
func (d *DB) NewIter(opts *IterOptions) (*Iterator, error) {
	rs, err := d.loadReadState()
	if err != nil {
		return nil, err
	}
	it := &Iterator{d: d, rs: rs}
	if opts != nil {
		it.opts = *opts
	}
	var srcs []base.InternalIterator
	for _, me := range rs.mems {
		srcs = append(srcs, me.mem.NewIter())
	}
	for _, lt := range rs.v.tables {
		for _, t := range lt {
			if it.opts.UpperBound != nil && bytes.Compare(t.meta.Smallest, it.opts.UpperBound) >= 0 {
				continue
			}
			if it.opts.LowerBound != nil && bytes.Compare(t.meta.Largest, it.opts.LowerBound) < 0 {
				continue
			}
			if t.meta.MaxVersion < it.opts.MinVersion {
				// NB: a key's newest version in this table is below
				// MinVersion, and any version of it elsewhere that is
				// newer is yielded from there.
				continue
			}
			srcs = append(srcs, t.reader.NewIter(bgCtx))
		}
	}
	it.merge = newMergingIter(srcs)
	return it, nil
}

// First moves to the first key at or above the lower bound.
func (it *Iterator) First() bool {
	if it.opts.LowerBound != nil {
		return it.settle(it.merge.SeekGE(it.opts.LowerBound))
	}
	return it.settle(it.merge.First())
}

// SeekGE moves to the first key at or above key (and the lower bound).
func (it *Iterator) SeekGE(key []byte) bool {
	if it.opts.LowerBound != nil && bytes.Compare(key, it.opts.LowerBound) < 0 {
		key = it.opts.LowerBound
	}
	return it.settle(it.merge.SeekGE(key))
}

// Next moves to the next key.
func (it *Iterator) Next() bool {
	if !it.valid {
		return false
	}
	return it.settle(it.merge.Next())
}

func (it *Iterator) settle(ok bool) bool {
	for ; ok; ok = it.merge.Next() {
		e := it.merge.Entry()
		if it.opts.UpperBound != nil && bytes.Compare(e.Key, it.opts.UpperBound) >= 0 {
			break
		}
		if e.Kind == base.KindDelete && !it.opts.IncludeTombstones {
			continue
		}
		if e.Version < it.opts.MinVersion {
			continue
		}
		e, err := it.rs.v.resolve(e)
		if err != nil {
			it.err = err
			break
		}
		it.cur, it.valid = e, true
		return true
	}
	it.valid = false
	if it.err == nil {
		it.err = it.merge.Error()
	}
	return false
}

// Valid reports whether the iterator is at a key.
func (it *Iterator) Valid() bool { return it.valid }

// Key returns the current key. It is valid until the next move.
func (it *Iterator) Key() []byte { return it.cur.Key }

// Value returns the current value (nil for a tombstone). It is valid until
// the next move.
func (it *Iterator) Value() []byte { return it.cur.Value }

// Version returns the current key's newest version.
func (it *Iterator) Version() uint64 { return it.cur.Version }

// Deleted reports whether the current version is a tombstone.
func (it *Iterator) Deleted() bool { return it.cur.Kind == base.KindDelete }

// Error returns the error that ended iteration, if any.
func (it *Iterator) Error() error { return it.err }

// Close releases the iterator and returns its error.
func (it *Iterator) Close() error {
	if it.rs == nil {
		return it.err
	}
	if err := it.merge.Close(); err != nil && it.err == nil {
		it.err = err
	}
	it.rs.unref(it.d)
	it.rs = nil
	return it.err
}

// mergingIter merges sources that each hold at most one entry per key into
// one stream with, per key, the entry of highest version.
type mergingIter struct {
	srcs []base.InternalIterator
	h    iterHeap
	cur  base.Entry
	key  []byte // buffer for the key being merged
	err  error
}

func newMergingIter(srcs []base.InternalIterator) *mergingIter {
	return &mergingIter{srcs: srcs, h: iterHeap{items: make([]heapItem, 0, len(srcs))}}
}

type heapItem struct {
	it  base.InternalIterator
	key []byte
}

type iterHeap struct{ items []heapItem }

func (h *iterHeap) Len() int           { return len(h.items) }
func (h *iterHeap) Less(i, j int) bool { return bytes.Compare(h.items[i].key, h.items[j].key) < 0 }
func (h *iterHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *iterHeap) Push(x any)         { h.items = append(h.items, x.(heapItem)) }
func (h *iterHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}

func (m *mergingIter) init(pos func(base.InternalIterator) bool) bool {
	m.h.items = m.h.items[:0]
	m.err = nil
	for _, s := range m.srcs {
		if pos(s) {
			m.h.items = append(m.h.items, heapItem{it: s, key: s.Entry().Key})
		} else if err := s.Error(); err != nil {
			m.err = err
			return false
		}
	}
	heap.Init(&m.h)
	return m.step()
}

// step pops every source positioned at the smallest key, keeps the highest
// version, and advances them.
func (m *mergingIter) step() bool {
	if m.err != nil || m.h.Len() == 0 {
		return false
	}
	// Copy: a source's slices die when it moves.
	m.key = append(m.key[:0], m.h.items[0].key...)
	found := false
	for m.h.Len() > 0 && bytes.Equal(m.h.items[0].key, m.key) {
		top := &m.h.items[0]
		e := top.it.Entry()
		if !found || e.Version > m.cur.Version {
			m.cur = base.Entry{Key: m.key, Version: e.Version, Kind: e.Kind, Value: append(m.cur.Value[:0], e.Value...)}
			found = true
		}
		if top.it.Next() {
			top.key = top.it.Entry().Key
			heap.Fix(&m.h, 0)
		} else {
			if err := top.it.Error(); err != nil {
				m.err = err
				return false
			}
			heap.Pop(&m.h)
		}
	}
	return true
}

func (m *mergingIter) First() bool {
	return m.init(func(s base.InternalIterator) bool { return s.First() })
}
func (m *mergingIter) SeekGE(key []byte) bool {
	return m.init(func(s base.InternalIterator) bool { return s.SeekGE(key) })
}
func (m *mergingIter) Next() bool        { return m.step() }
func (m *mergingIter) Entry() base.Entry { return m.cur }
func (m *mergingIter) Error() error      { return m.err }
func (m *mergingIter) Close() error {
	for _, s := range m.srcs {
		if err := s.Close(); err != nil && m.err == nil {
			m.err = err
		}
	}
	return m.err
}

var _ base.InternalIterator = (*mergingIter)(nil)
