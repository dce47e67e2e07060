package sstable

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

// blockWriter builds one block in the shared data/index block encoding.
type blockWriter struct {
	buf      []byte
	restarts []uint32
	lastKey  []byte
	nEntries int
}

// add appends an entry. REQUIRES: key > the previous key of the block.
func (w *blockWriter) add(key []byte, version uint64, kind base.Kind, value []byte) {
	shared := 0
	if w.nEntries%restartInterval == 0 {
		w.restarts = append(w.restarts, uint32(len(w.buf)))
	} else {
		shared = sharedPrefixLen(w.lastKey, key)
	}
	w.buf = binary.AppendUvarint(w.buf, uint64(shared))
	w.buf = binary.AppendUvarint(w.buf, uint64(len(key)-shared))
	w.buf = binary.AppendUvarint(w.buf, uint64(len(value)))
	w.buf = append(w.buf, key[shared:]...)
	w.buf = binary.LittleEndian.AppendUint64(w.buf, version)
	w.buf = append(w.buf, byte(kind))
	w.buf = append(w.buf, value...)
	w.lastKey = append(w.lastKey[:0], key...)
	w.nEntries++
}

// entrySize returns an upper bound of the bytes add would append.
func entrySize(key, value []byte) int {
	return 3*binary.MaxVarintLen32 + len(key) + entryFixedSize + len(value)
}

// estimatedSize returns the size finish would return now.
func (w *blockWriter) estimatedSize() int {
	return len(w.buf) + 4*len(w.restarts) + 4
}

// finish appends the restart array and returns the block contents, which
// stay valid until reset.
func (w *blockWriter) finish() []byte {
	for _, r := range w.restarts {
		w.buf = binary.LittleEndian.AppendUint32(w.buf, r)
	}
	w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(len(w.restarts)))
	return w.buf
}

func (w *blockWriter) reset() {
	w.buf = w.buf[:0]
	w.restarts = w.restarts[:0]
	w.lastKey = w.lastKey[:0]
	w.nEntries = 0
}

func sharedPrefixLen(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// block is a decoded, validated block. It aliases data, which is immutable.
type block struct {
	data []byte
	// restartsOff is the offset of the restart array, which is also the end
	// of the entries.
	restartsOff int
	numRestarts int
}

// restart returns the offset of restart point i.
func (b *block) restart(i int) int {
	return int(binary.LittleEndian.Uint32(b.data[b.restartsOff+4*i:]))
}

// parseBlockTrusted parses a block that decodeBlock already validated (for
// example one taken from the cache).
func parseBlockTrusted(data []byte) block {
	n := int(binary.LittleEndian.Uint32(data[len(data)-4:]))
	return block{data: data, restartsOff: len(data) - 4 - 4*n, numRestarts: n}
}

// rawEntry is an entry decoded in place: the key suffix and the value alias
// the block.
type rawEntry struct {
	shared  int
	suffix  []byte
	version uint64
	kind    base.Kind
	value   []byte
	next    int // offset of the next entry
}

// decodeEntryAt decodes the entry at off, checking bounds against end.
func decodeEntryAt(data []byte, off, end int) (rawEntry, error) {
	var e rawEntry
	p := data[off:end]
	shared, n1 := binary.Uvarint(p)
	if n1 <= 0 {
		return e, fmt.Errorf("entry at block offset %d: bad shared length", off)
	}
	unshared, n2 := binary.Uvarint(p[n1:])
	if n2 <= 0 {
		return e, fmt.Errorf("entry at block offset %d: bad key length", off)
	}
	vlen, n3 := binary.Uvarint(p[n1+n2:])
	if n3 <= 0 {
		return e, fmt.Errorf("entry at block offset %d: bad value length", off)
	}
	h := uint64(n1 + n2 + n3)
	rest := uint64(len(p)) - h
	if unshared > rest || vlen > rest || unshared+vlen+entryFixedSize > rest || shared > uint64(len(data)) {
		return e, fmt.Errorf("entry at block offset %d: lengths (%d, %d, %d) overflow the block", off, shared, unshared, vlen)
	}
	k := int(h)
	e.shared = int(shared)
	e.suffix = p[k : k+int(unshared) : k+int(unshared)]
	k += int(unshared)
	e.version = binary.LittleEndian.Uint64(p[k:])
	e.kind = base.Kind(p[k+8])
	if e.kind > base.KindMax {
		return e, fmt.Errorf("entry at block offset %d: bad kind %d", off, p[k+8])
	}
	k += entryFixedSize
	e.value = p[k : k+int(vlen) : k+int(vlen)]
	e.next = off + k + int(vlen)
	return e, nil
}

// decodeBlock validates the block contents data and returns the parsed
// block. It checks the restart array and every entry: bounds, kinds,
// restart points at entry boundaries with no shared prefix, and strictly
// increasing keys. After it succeeds, iterating the block cannot fail.
func decodeBlock(data []byte) (block, error) {
	if len(data) < 4 {
		return block{}, fmt.Errorf("block of %d bytes is too short", len(data))
	}
	n := binary.LittleEndian.Uint32(data[len(data)-4:])
	if uint64(n) > uint64(len(data)-4)/4 {
		return block{}, fmt.Errorf("block of %d bytes claims %d restart points", len(data), n)
	}
	b := block{data: data, restartsOff: len(data) - 4 - 4*int(n), numRestarts: int(n)}
	if b.numRestarts == 0 {
		if b.restartsOff != 0 {
			return block{}, fmt.Errorf("block has %d bytes of entries and no restart point", b.restartsOff)
		}
		return b, nil
	}
	if b.restart(0) != 0 {
		return block{}, fmt.Errorf("first restart point at %d, want 0", b.restart(0))
	}
	var keyBuf [128]byte
	key := keyBuf[:0]
	ri := 0 // index of the next restart point to meet
	for off := 0; off < b.restartsOff; {
		e, err := decodeEntryAt(data, off, b.restartsOff)
		if err != nil {
			return block{}, err
		}
		if ri < b.numRestarts && b.restart(ri) < off {
			return block{}, fmt.Errorf("restart point %d is not at an entry boundary", b.restart(ri))
		}
		if ri < b.numRestarts && b.restart(ri) == off {
			if e.shared != 0 {
				return block{}, fmt.Errorf("entry at restart point %d has a shared prefix", off)
			}
			ri++
		}
		if e.shared > len(key) {
			return block{}, fmt.Errorf("entry at block offset %d shares %d bytes of a %d-byte key", off, e.shared, len(key))
		}
		// The new key is key[:shared] + suffix; compare it with the
		// previous key without building it.
		if off > 0 && bytes.Compare(e.suffix, key[e.shared:]) <= 0 {
			return block{}, fmt.Errorf("entry at block offset %d: keys not strictly increasing", off)
		}
		key = append(key[:e.shared], e.suffix...)
		off = e.next
	}
	if ri != b.numRestarts {
		return block{}, fmt.Errorf("restart point %d is not at an entry boundary", b.restart(ri))
	}
	return b, nil
}

// restartKey returns the full key stored at restart point i of a validated
// block.
func (b *block) restartKey(i int) []byte {
	e, _ := decodeEntryAt(b.data, b.restart(i), b.restartsOff)
	return e.suffix
}

// searchRestarts returns the index of the last restart point whose key is
// <= key, or 0 if there is none. REQUIRES: b.numRestarts > 0.
func (b *block) searchRestarts(key []byte) int {
	lo, hi := 0, b.numRestarts // find the first restart with key > target
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bytes.Compare(b.restartKey(m), key) <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return max(lo-1, 0)
}

// get looks key up in a validated block without allocating, except for
// the returned key when it is not stored whole in the block. The returned
// value aliases the block.
func (b *block) get(key []byte) (base.Entry, bool) {
	if b.numRestarts == 0 {
		return base.Entry{}, false
	}
	off := b.restart(b.searchRestarts(key))
	// matched is the length of the common prefix of the previous entry's
	// key and the target key, the previous key being smaller than the
	// target. The first entry scanned is a restart point (shared = 0).
	matched := 0
	for off < b.restartsOff {
		e, _ := decodeEntryAt(b.data, off, b.restartsOff)
		off = e.next
		if e.shared > matched {
			// The entry keeps the previous key's byte at the position where
			// that key was smaller than the target: it is still smaller.
			continue
		}
		// The entry and the target agree on their first e.shared bytes, so
		// the suffix decides. NB: the writer always shares the longest
		// common prefix, but the format does not require it.
		m := e.shared
		rest := key[m:]
		c := sharedPrefixLen(e.suffix, rest)
		switch {
		case c == len(e.suffix) && c == len(rest):
			ent := base.Entry{Version: e.version, Kind: e.kind, Value: e.value}
			if e.shared == 0 {
				ent.Key = e.suffix
			} else {
				ent.Key = append([]byte(nil), key...)
			}
			if ent.Kind == base.KindDelete {
				ent.Value = nil
			}
			return ent, true
		case c == len(e.suffix) || (c < len(rest) && e.suffix[c] < rest[c]):
			// The entry is a prefix of the target, or smaller at byte c.
			matched = m + c
		default:
			return base.Entry{}, false
		}
	}
	return base.Entry{}, false
}

// blockIter iterates over a validated block.
type blockIter struct {
	b     block
	off   int // offset of the current entry
	next  int // offset of the next entry
	key   []byte
	e     rawEntry
	valid bool
}

func (i *blockIter) init(b block) {
	i.b = b
	i.off, i.next = 0, 0
	i.key = i.key[:0]
	i.valid = false
}

// decodeAt decodes the entry at off, building its key from the current one.
func (i *blockIter) decodeAt(off int) bool {
	if off >= i.b.restartsOff {
		i.valid = false
		return false
	}
	i.e, _ = decodeEntryAt(i.b.data, off, i.b.restartsOff)
	i.key = append(i.key[:i.e.shared], i.e.suffix...)
	i.off, i.next = off, i.e.next
	i.valid = true
	return true
}

func (i *blockIter) first() bool {
	i.key = i.key[:0]
	return i.decodeAt(0)
}

func (i *blockIter) nextEntry() bool {
	if !i.valid {
		return false
	}
	return i.decodeAt(i.next)
}

// seekGE positions at the first entry with a key >= key.
func (i *blockIter) seekGE(key []byte) bool {
	if i.b.numRestarts == 0 {
		i.valid = false
		return false
	}
	i.key = i.key[:0]
	for ok := i.decodeAt(i.b.restart(i.b.searchRestarts(key))); ok; ok = i.decodeAt(i.next) {
		if bytes.Compare(i.key, key) >= 0 {
			return true
		}
	}
	return false
}

// entry returns the current entry. Key aliases the iterator's buffer and
// Value the block.
func (i *blockIter) entry() base.Entry {
	ent := base.Entry{Key: i.key, Version: i.e.version, Kind: i.e.kind, Value: i.e.value}
	if ent.Kind == base.KindDelete {
		ent.Value = nil
	}
	return ent
}
