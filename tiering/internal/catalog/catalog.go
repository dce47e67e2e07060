// Package catalog is tiering's record of which engine objects are stored in
// the object store: tiering's manifest of remote objects. An object enters
// the catalog (Add) only after its upload was verified (size and CRC32C),
// and before its local copy is deleted; it leaves (Drop) when the engine
// removes it. The remote copy is then left to garbage collection, which
// deletes it once no manifest backup references it.
//
// The catalog is an append-only log of edits in one file. Every Open
// rewrites it as a snapshot of the live entries (temporary file, sync,
// rename, directory sync), and so does an edit that leaves the log more
// than twice the size of such a snapshot and CompactMinGrowth bytes
// larger: the log stays within a constant factor of the live entries,
// and each rewrite is paid for by as many bytes of edits as it writes.
//
// Record layout (little-endian; part of the on-disk format; do not change):
//
//	+-----------+------------+-----------------------------------------------+
//	| crc32c(4) | length (4) | payload (length bytes)                         |
//	+-----------+------------+-----------------------------------------------+
//	crc32c covers the length field and the payload.
//	payload := version (1) = 1 | op (1) | type (1) | num (uvarint) |
//	           size (uvarint) | crc32c of the object (4) | metaOff (uvarint)
//	op 1 = add (the object is durable in the bucket), 2 = drop.
//
// A bad record that reaches the end of the file is a torn tail (a crash
// during an append): it is truncated and logged. A bad record followed by
// more bytes is corruption: Open fails with an error naming file and offset.
package catalog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"slices"
	"sync"

	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// Part of the on-disk format; do not change.
const (
	headerSize    = 8
	formatVersion = 1
	opAdd         = 1
	opDrop        = 2
	// maxPayload bounds a record's length.
	maxPayload = 64
)

// ErrCorrupt marks a catalog that does not decode.
var ErrCorrupt = errors.New("tiering/catalog: corrupt")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Entry is a remote object.
type Entry struct {
	Type objstorage.FileType
	Num  uint64
	// Size is the object's size in bytes and CRC its CRC32C.
	Size int64
	CRC  uint32
	// MetaOff is where the object's metadata starts (see
	// lsm.ObjectMetaOffset): [MetaOff, Size) is kept on local disk.
	MetaOff int64
}

// Key identifies an object.
type Key struct {
	Type objstorage.FileType
	Num  uint64
}

// Key returns the entry's key.
func (e Entry) Key() Key { return Key{e.Type, e.Num} }

// Edit is one decoded record.
type Edit struct {
	Drop  bool
	Entry Entry
}

// EncodeEdit appends the framed record of e to dst.
func EncodeEdit(dst []byte, e Edit) []byte {
	var p []byte
	op := byte(opAdd)
	if e.Drop {
		op = opDrop
	}
	p = append(p, formatVersion, op, byte(e.Entry.Type))
	p = binary.AppendUvarint(p, e.Entry.Num)
	p = binary.AppendUvarint(p, uint64(e.Entry.Size))
	p = binary.LittleEndian.AppendUint32(p, e.Entry.CRC)
	p = binary.AppendUvarint(p, uint64(e.Entry.MetaOff))
	var h [headerSize]byte
	binary.LittleEndian.PutUint32(h[4:], uint32(len(p)))
	crc := crc32.Update(crc32.Checksum(h[4:], crcTable), crcTable, p)
	binary.LittleEndian.PutUint32(h[:4], crc)
	dst = append(dst, h[:]...)
	return append(dst, p...)
}

// DecodePayload decodes a record payload.
func DecodePayload(p []byte) (Edit, error) {
	var e Edit
	if len(p) < 3 {
		return e, fmt.Errorf("%w: payload of %d bytes", ErrCorrupt, len(p))
	}
	if p[0] != formatVersion {
		return e, fmt.Errorf("%w: unknown version %d", ErrCorrupt, p[0])
	}
	switch p[1] {
	case opAdd:
	case opDrop:
		e.Drop = true
	default:
		return e, fmt.Errorf("%w: unknown op %d", ErrCorrupt, p[1])
	}
	if p[2] > byte(objstorage.FileTypeBlob) {
		return e, fmt.Errorf("%w: unknown file type %d", ErrCorrupt, p[2])
	}
	e.Entry.Type = objstorage.FileType(p[2])
	p = p[3:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	var ok bool
	if e.Entry.Num, ok = uv(); !ok {
		return e, fmt.Errorf("%w: bad number", ErrCorrupt)
	}
	size, ok := uv()
	if !ok || size > 1<<62 {
		return e, fmt.Errorf("%w: bad size", ErrCorrupt)
	}
	e.Entry.Size = int64(size)
	if len(p) < 4 {
		return e, fmt.Errorf("%w: short checksum", ErrCorrupt)
	}
	e.Entry.CRC = binary.LittleEndian.Uint32(p)
	p = p[4:]
	mo, ok := uv()
	if !ok || mo > size {
		return e, fmt.Errorf("%w: bad metadata offset", ErrCorrupt)
	}
	e.Entry.MetaOff = int64(mo)
	if len(p) != 0 {
		return e, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(p))
	}
	return e, nil
}

// Replay decodes the records of data in order and calls fn for each. It
// returns the size of the valid prefix. A bad record that reaches the end
// of data is a torn tail: Replay stops there with torn set; a bad record
// followed by other bytes is an error wrapping ErrCorrupt naming the offset.
func Replay(data []byte, fn func(Edit)) (valid int64, torn bool, err error) {
	off := 0
	for off < len(data) {
		rest := data[off:]
		if len(rest) < headerSize {
			return int64(off), true, nil
		}
		n := int(binary.LittleEndian.Uint32(rest[4:8]))
		if n > maxPayload {
			if allZero(rest) {
				return int64(off), true, nil
			}
			return int64(off), false, fmt.Errorf("%w: record at offset %d: length %d", ErrCorrupt, off, n)
		}
		end := headerSize + n
		if end > len(rest) {
			return int64(off), true, nil
		}
		if binary.LittleEndian.Uint32(rest[:4]) != crc32.Checksum(rest[4:end], crcTable) {
			if end == len(rest) || allZero(rest) {
				return int64(off), true, nil
			}
			return int64(off), false, fmt.Errorf("%w: record at offset %d: checksum mismatch", ErrCorrupt, off)
		}
		e, err := DecodePayload(rest[headerSize:end])
		if err != nil {
			return int64(off), false, fmt.Errorf("record at offset %d: %w", off, err)
		}
		fn(e)
		off += end
	}
	return int64(off), false, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// CompactMinGrowth is how much the log must have grown past its last
// snapshot before an edit rewrites it (besides being twice its size).
const CompactMinGrowth = 1 << 20

// Catalog is the open catalog. It is safe for concurrent use.
type Catalog struct {
	fs     vfs.FS
	path   string
	logger *slog.Logger
	// compactMinGrowth is CompactMinGrowth (tests lower it).
	compactMinGrowth int64
	// mu guards the file and the entries; appends are synced under it.
	mu struct {
		sync.Mutex
		f       vfs.File
		entries map[Key]Entry
		err     error
		// size is the log's size in bytes; base its size after the last
		// rewrite (a snapshot of the live entries then).
		size, base int64
		// rewrites counts the rewrites since Open (tests).
		rewrites int
	}
}

// Open replays the catalog at path (a missing file is an empty catalog),
// then rewrites it as a snapshot of its live entries.
func Open(fs vfs.FS, path string, logger *slog.Logger) (*Catalog, error) {
	c := &Catalog{fs: fs, path: path, logger: logger, compactMinGrowth: CompactMinGrowth}
	c.mu.entries = map[Key]Entry{}
	data, err := readFile(fs, path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tiering/catalog: read %s: %w", path, err)
	}
	valid, torn, err := Replay(data, func(e Edit) {
		if e.Drop {
			delete(c.mu.entries, e.Entry.Key())
		} else {
			c.mu.entries[e.Entry.Key()] = e.Entry
		}
	})
	if err != nil {
		return nil, fmt.Errorf("tiering/catalog: %s: %w", path, err)
	}
	if torn && logger != nil {
		logger.Warn("tiering: truncated torn catalog tail", "file", path, "offset", valid, "bytes", int64(len(data))-valid)
	}
	if err := c.rewriteLocked(); err != nil {
		if c.mu.f != nil {
			c.mu.f.Close()
		}
		return nil, err
	}
	return c, nil
}

// rewriteLocked replaces the log by a snapshot of the live entries: a
// temporary file, synced, renamed over the log, directory synced. Until
// the rename the old log stands (an error leaves the catalog usable);
// after it, the new file is the log, and a failed directory sync makes the
// catalog refuse edits (which file a crash would leave is unknown).
func (c *Catalog) rewriteLocked() error {
	var snap []byte
	for _, e := range c.sortedLocked() {
		snap = EncodeEdit(snap, Edit{Entry: e})
	}
	fs, path := c.fs, c.path
	tmp := path + ".tmp"
	f, err := fs.Create(tmp)
	if err != nil {
		return fmt.Errorf("tiering/catalog: %w", err)
	}
	_, err = f.Write(snap)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		_ = fs.Remove(tmp)
		return fmt.Errorf("tiering/catalog: write %s: %w", tmp, err)
	}
	if err := fs.Rename(tmp, path); err != nil {
		f.Close()
		_ = fs.Remove(tmp)
		return fmt.Errorf("tiering/catalog: %w", err)
	}
	old := c.mu.f
	c.mu.f = f
	c.mu.size, c.mu.base = int64(len(snap)), int64(len(snap))
	c.mu.rewrites++
	if old != nil {
		_ = old.Close()
	}
	dir, _ := splitDir(path)
	if err := vfs.SyncDir(fs, dir); err != nil {
		c.mu.err = fmt.Errorf("tiering/catalog: sync %s: %w", dir, err)
		return c.mu.err
	}
	return nil
}

// maybeCompactLocked rewrites the log once it is more than twice its last
// snapshot and compactMinGrowth bytes larger. A failed rewrite before the
// rename is logged and retried after as much growth again; the edit that
// triggered it is durable either way.
func (c *Catalog) maybeCompactLocked() {
	if c.mu.size <= 2*c.mu.base || c.mu.size-c.mu.base <= c.compactMinGrowth {
		return
	}
	if err := c.rewriteLocked(); err != nil && c.mu.err == nil {
		if c.logger != nil {
			c.logger.Warn("tiering: catalog compaction failed; will retry", "file", c.path, "err", err)
		}
		c.mu.base = c.mu.size // retry after as much growth again
	}
}

func splitDir(path string) (string, string) {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' || path[i] == os.PathSeparator {
			if i == 0 {
				return "/", path[1:]
			}
			return path[:i], path[i+1:]
		}
	}
	return ".", path
}

func readFile(fs vfs.FS, name string) ([]byte, error) {
	f, err := fs.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && len(b) > 0 {
		return nil, err
	}
	return b, nil
}

func (c *Catalog) sortedLocked() []Entry {
	out := make([]Entry, 0, len(c.mu.entries))
	for _, e := range c.mu.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if a.Type != b.Type {
			return int(a.Type) - int(b.Type)
		}
		switch {
		case a.Num < b.Num:
			return -1
		case a.Num > b.Num:
			return 1
		}
		return 0
	})
	return out
}

func (c *Catalog) appendLocked(e Edit) error {
	if c.mu.err != nil {
		return c.mu.err
	}
	if c.mu.f == nil {
		return errors.New("tiering/catalog: closed")
	}
	rec := EncodeEdit(nil, e)
	if _, err := c.mu.f.Write(rec); err != nil {
		c.mu.err = fmt.Errorf("tiering/catalog: append to %s: %w", c.path, err)
		return c.mu.err
	}
	if err := c.mu.f.Sync(); err != nil {
		// After a failed sync the file's state is unknown: refuse more.
		c.mu.err = fmt.Errorf("tiering/catalog: sync %s: %w", c.path, err)
		return c.mu.err
	}
	c.mu.size += int64(len(rec))
	return nil
}

// Add records e durably (synced) as a remote object.
func (c *Catalog) Add(e Entry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.appendLocked(Edit{Entry: e}); err != nil {
		return err
	}
	c.mu.entries[e.Key()] = e
	c.maybeCompactLocked()
	return nil
}

// Drop records durably that the engine removed the object. Dropping an
// object the catalog does not hold does nothing.
func (c *Catalog) Drop(k Key) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.mu.entries[k]
	if !ok {
		return nil
	}
	if err := c.appendLocked(Edit{Drop: true, Entry: e}); err != nil {
		return err
	}
	delete(c.mu.entries, k)
	c.maybeCompactLocked()
	return nil
}

// Get returns the entry of k.
func (c *Catalog) Get(k Key) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.mu.entries[k]
	return e, ok
}

// Entries returns every live entry, by type then number.
func (c *Catalog) Entries() []Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sortedLocked()
}

// Close closes the file. It is idempotent.
func (c *Catalog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.f == nil {
		return nil
	}
	err := c.mu.f.Close()
	c.mu.f = nil
	return err
}

// WriteNew writes a catalog holding entries at path, replacing any file
// there (restore uses it).
func WriteNew(fs vfs.FS, path string, entries []Entry) error {
	var b []byte
	for _, e := range entries {
		b = EncodeEdit(b, Edit{Entry: e})
	}
	if err := vfs.WriteFileAtomic(fs, path, b); err != nil {
		return fmt.Errorf("tiering/catalog: write %s: %w", path, err)
	}
	return nil
}
